"""Whole suites for end-to-end tests: a standalone suite in a child process
(`imctl standalone`) on free ports, or a local distributed cluster (im.cluster) on
the real servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from im.free_ports import free_port, lost_a_port_race

IMCTL = Path(sys.executable).with_name("imctl")
# Seconds a suite may take to become ready (raise it on a loaded machine).
READY_TIMEOUT = float(os.environ.get("IM_TEST_READY_TIMEOUT", "30"))


@dataclass
class RunningSuite:
    gateway: str
    tcp: str
    ws: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _start_suite_once(data_dir: Path, **overrides: str) -> RunningSuite:
    ports = {
        name: free_port()
        for name in (
            "GATEWAY_PORT",
            "USER_GRPC_PORT",
            "GROUP_GRPC_PORT",
            "CONNECTOR_GRPC_PORT",
            "ROUTER_GRPC_PORT",
            "GATEWAY_GRPC_PORT",
            "CONNECTOR_TCP_PORT",
            "CONNECTOR_WS_PORT",
            "ADMIN_GRPC_PORT",  # served when a test's suite has an admin token
        )
    }
    env = dict(os.environ)
    env.update({f"IM_{k}": str(v) for k, v in ports.items()})
    env.update(
        {
            "IM_DATA_DIR": str(data_dir),
            "IM_ARGON2_TIME_COST": "1",
            "IM_ARGON2_MEMORY_KIB": "8192",
            "IM_LOG_LEVEL": "INFO",
            "IM_REGISTRATIONS_PER_ADDRESS_PER_HOUR": "0",  # every test user is 127.0.0.1
        }
    )
    env.update({f"IM_{k.upper()}": v for k, v in overrides.items()})
    data_dir.mkdir(parents=True, exist_ok=True)
    return _launch(env, data_dir / "suite.log", "wb")


def restart_suite(suite: RunningSuite) -> RunningSuite:
    """The same suite (ports, data folder, settings) started again after stop_suite."""
    return _launch(suite.env, suite.log_path, "ab")  # the log goes on


def _launch(env: dict[str, str], log_path: Path, mode: str) -> RunningSuite:
    log_file = log_path.open(mode)
    process = subprocess.Popen(
        [str(IMCTL), "standalone"], env=env, stdout=log_file, stderr=subprocess.STDOUT
    )
    gateway = f"http://127.0.0.1:{env['IM_GATEWAY_PORT']}"
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"suite exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{gateway}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"suite not ready in {READY_TIMEOUT:.0f} s:\n{log_path.read_text()}")
        time.sleep(0.1)
    return RunningSuite(
        gateway=gateway,
        tcp=f"127.0.0.1:{env['IM_CONNECTOR_TCP_PORT']}",
        ws=f"ws://127.0.0.1:{env['IM_CONNECTOR_WS_PORT']}/ws",
        process=process,
        log_path=log_path,
        env=env,
    )


def start_suite(data_dir: Path, **overrides: str) -> RunningSuite:
    """Start a suite on free ports; a port taken between choosing and binding it (by
    another process on this machine) gets a second try on new ports."""
    for attempt in range(3):
        try:
            return _start_suite_once(data_dir, **overrides)
        except RuntimeError as exc:
            if not lost_a_port_race(str(exc)) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def stop_suite(suite: RunningSuite) -> int:
    suite.process.send_signal(signal.SIGTERM)
    try:
        return suite.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        suite.process.kill()
        suite.process.wait()
        raise AssertionError(f"suite did not stop on SIGTERM:\n{suite.log()}") from None


# ------------------------------------------------------------ distributed cluster


def start_cluster(tmp_path_factory, real_server, **env: str):  # type: ignore[no-untyped-def]
    """A local distributed cluster (im.cluster) on the real servers, isolated by a run
    id: its own topics, consumer group, ZooKeeper root, Mongo database, Redis prefix."""
    import uuid

    from im.cluster import Cluster

    urls = {name: real_server(name) for name in ("mysql", "redis", "mongo", "kafka", "zookeeper")}
    run = uuid.uuid4().hex[:8]
    zk_root = f"/im-e2e-{run}"
    cluster = Cluster(
        log_dir=tmp_path_factory.mktemp("cluster"),
        backends={
            "IM_DATABASE_URL": urls["mysql"],
            "IM_MESSAGE_STORE_URL": urls["mongo"].replace("/im_test?", f"/im_e2e_{run}?"),
            "IM_BUS_URL": urls["kafka"],
            "IM_REGISTRY_URL": urls["zookeeper"].rsplit("/", 1)[0] + zk_root,
            "IM_KV_URL": urls["redis"],
        },
        extra_env={
            "IM_KV_PREFIX": f"im-e2e-{run}:",
            "IM_TOPIC_MESSAGES": f"e2e-{run}.messages",
            "IM_TOPIC_CURSORS": f"e2e-{run}.cursors",
            "IM_TOPIC_MEMBERSHIP": f"e2e-{run}.membership",
            "IM_ROUTER_GROUP": f"e2e-{run}-routers",
            "IM_ARGON2_TIME_COST": "1",
            "IM_ARGON2_MEMORY_KIB": "8192",
            "IM_HEARTBEAT_INTERVAL": "2",
            "IM_RETRANSMIT_TIMEOUT": "1",
            "IM_REGISTRATIONS_PER_ADDRESS_PER_HOUR": "0",  # every test user is 127.0.0.1
            **{f"IM_{k.upper()}": v for k, v in env.items()},
        },
    )
    cluster.zk_hosts = urls["zookeeper"].split("//", 1)[1].split("/", 1)[0]  # type: ignore[attr-defined]
    cluster.zk_root = zk_root  # type: ignore[attr-defined]
    cluster.start(timeout=90)
    return cluster


def stop_cluster(cluster) -> None:  # type: ignore[no-untyped-def]
    codes = cluster.stop()
    killed = {n for n, p in cluster.procs.items() if getattr(p, "killed", False)}
    bad = {n: c for n, c in codes.items() if c != 0 and n not in killed}
    assert not bad, f"processes did not exit cleanly on SIGTERM: {bad}; logs in {cluster.log_dir}"
