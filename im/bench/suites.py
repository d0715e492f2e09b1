"""The servers under test, each in its own process(es): a standalone suite
(``imctl standalone`` child), the local distributed cluster (``im.cluster.Cluster`` on
the servers of ``scripts/dev-services.sh``), a suite the user points at with
``--gateway``, and the bare relay (``python -m im.bench.relay``)."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from im.bench.limits import raise_nofile
from im.bench.procs import BenchError
from im.cluster import DEFAULT_BACKENDS, Cluster
from im.free_ports import free_port

# The bench drives each connection far above the product's default per-connection send
# limit (200/s) and logs the same users in many times a minute: the suite it starts lifts
# those limits so the numbers show the server's cost, not the rate limiters. Logging
# stays at WARNING so log I/O is not measured.
SUITE_ENV = {
    "IM_SEND_RATE_PER_SECOND": "1000000",
    "IM_SEND_BURST": "1000000",
    "IM_LOGIN_FAILURES_PER_USER_ADDRESS": "0",
    "IM_LOGIN_FAILURES_PER_ADDRESS": "0",
    "IM_REGISTRATIONS_PER_ADDRESS_PER_HOUR": "0",
    # Every generated connection comes from this machine's one address.
    "IM_MAX_UNAUTHENTICATED_PER_ADDRESS": "0",
    "IM_LOG_LEVEL": "WARNING",
}


def _raise_child_nofile() -> None:  # preexec_fn: runs in the child before exec
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _wait_ready(url: str, alive, timeout: float, what: str, log: Path | None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise BenchError(f"{what} exited before it was ready:\n{tail}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not ready in {timeout:.0f} s (log: {log})")
        time.sleep(0.2)


@dataclass
class Target:
    """A running suite (or one we were pointed at)."""

    mode: str  # standalone | distributed | external
    gateway: str
    private_key: bytes | None = None  # to mint tokens (only for suites we started)
    issuer: str = "im-gateway"
    pids: dict[str, int] = field(default_factory=dict)  # process name -> pid
    connector_pids: dict[str, int] = field(default_factory=dict)  # connector id -> pid
    argon2: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _stop: object = None

    def connector_pid(self, connector_id: str) -> int | None:
        if connector_id in self.connector_pids:
            return self.connector_pids[connector_id]
        if self.mode == "standalone":
            return self.pids.get("suite")
        return None

    def stop(self) -> None:
        if callable(self._stop):
            self._stop()
            self._stop = None


def _argon2_from_env(env: dict[str, str]) -> dict[str, int]:
    from im.config import Settings

    defaults = Settings.model_fields
    return {
        "time_cost": int(env.get("IM_ARGON2_TIME_COST") or defaults["argon2_time_cost"].default),
        "memory_kib": int(env.get("IM_ARGON2_MEMORY_KIB") or defaults["argon2_memory_kib"].default),
        "parallelism": int(
            env.get("IM_ARGON2_PARALLELISM") or defaults["argon2_parallelism"].default
        ),
    }


def start_standalone(run_dir: Path, extra_env: dict[str, str] | None = None) -> Target:
    """``imctl standalone`` in a child process on free ports, data in a temp folder."""
    data_dir = Path(tempfile.mkdtemp(prefix="im-bench-", dir=_tmp_root()))
    ports = {
        name: free_port()
        for name in (
            "GATEWAY_PORT",
            "USER_GRPC_PORT",
            "GROUP_GRPC_PORT",
            "CONNECTOR_GRPC_PORT",
            "CONNECTOR_TCP_PORT",
            "CONNECTOR_WS_PORT",
            "ROUTER_GRPC_PORT",
            "GATEWAY_GRPC_PORT",
            "GATEWAY_METRICS_PORT",
        )
    }
    env = dict(os.environ)
    env.update({f"IM_{k}": str(v) for k, v in ports.items()})
    env.update({"IM_DATA_DIR": str(data_dir), "IM_HOST": "127.0.0.1", **SUITE_ENV})
    env.update(extra_env or {})
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "standalone.log"
    log = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "im.cli", "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_raise_child_nofile,
        start_new_session=True,
    )
    gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"

    def stop() -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)

    try:
        _wait_ready(gateway, lambda: process.poll() is None, 60, "standalone suite", log_path)
    except BaseException:
        stop()
        raise
    return Target(
        mode="standalone",
        gateway=gateway,
        private_key=(data_dir / "jwt-private.pem").read_bytes(),
        issuer=env.get("IM_JWT_ISSUER", "im-gateway"),
        pids={"suite": process.pid},
        argon2=_argon2_from_env(env),
        notes=[
            "standalone: all five services are one process (pid "
            f"{process.pid}); its RSS includes the other services",
        ],
        _stop=stop,
    )


def start_distributed(
    run_dir: Path, connectors: int = 2, routers: int = 2, extra_env: dict[str, str] | None = None
) -> Target:
    """The local cluster (one process per service) on the dev servers, with topics,
    consumer group, ZooKeeper root, Redis prefix and Mongo database unique to this run."""
    run = uuid.uuid4().hex[:8]
    backends = dict(DEFAULT_BACKENDS)
    backends["IM_MESSAGE_STORE_URL"] = re.sub(
        r"/im(\?|$)", f"/im_bench_{run}\\1", backends["IM_MESSAGE_STORE_URL"]
    )
    backends["IM_REGISTRY_URL"] = backends["IM_REGISTRY_URL"].rsplit("/", 1)[0] + f"/im-bench-{run}"
    env = {
        **SUITE_ENV,
        "IM_KV_PREFIX": f"im-bench-{run}:",
        "IM_TOPIC_MESSAGES": f"bench-{run}.messages",
        "IM_TOPIC_CURSORS": f"bench-{run}.cursors",
        "IM_TOPIC_MEMBERSHIP": f"bench-{run}.membership",
        "IM_ROUTER_GROUP": f"bench-{run}-routers",
        **(extra_env or {}),
    }
    cluster = Cluster(
        log_dir=run_dir / f"cluster-{run}",
        backends=backends,
        connectors=connectors,
        routers=routers,
        extra_env=env,
    )
    raise_nofile()  # the cluster's processes inherit our limits
    try:
        cluster.start(timeout=120)
    except BaseException:
        cluster.stop()
        raise
    pids = {name: p.process.pid for name, p in cluster.procs.items() if p.process}
    connector_pids = {
        p.env.get("IM_CONNECTOR_ID", name): p.process.pid
        for name, p in cluster.procs.items()
        if p.service == "connector" and p.process
    }
    return Target(
        mode="distributed",
        gateway=cluster.gateway_url,
        private_key=(cluster.log_dir / "jwt-private.pem").read_bytes(),
        pids=pids,
        connector_pids=connector_pids,
        argon2=_argon2_from_env({**os.environ, **env}),
        notes=[
            f"distributed: {connectors} connector(s), {routers} router(s), gateway, user, group "
            "as separate processes on MariaDB, Redis, the MongoDB-protocol server, the "
            "Kafka-protocol broker and ZooKeeper (scripts/dev-services.sh), all on this machine",
        ],
        _stop=lambda: cluster.stop(),
    )


def external(gateway: str, connector_pid: int | None = None) -> Target:
    try:
        ok = httpx.get(f"{gateway}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError as exc:
        raise BenchError(f"{gateway} is not reachable: {exc!r}") from exc
    if not ok:
        raise BenchError(f"{gateway}/readyz is not 200")
    target = Target(mode="external", gateway=gateway, argon2=_argon2_from_env(dict(os.environ)))
    if connector_pid:
        target.pids["connector"] = connector_pid
    target.notes.append(
        "external suite (--gateway): tokens come from real logins, the per-connection send "
        "limit (IM_SEND_RATE_PER_SECOND) and login and registration limits are "
        "the server's own, argon2 parameters are assumed from this environment"
    )
    return target


def _tmp_root() -> str | None:
    return os.environ.get("IM_BENCH_TMP") or None


# ------------------------------------------------------------------ relay


@dataclass
class Relay:
    address: str
    pid: int
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_relay() -> Relay:
    process = subprocess.Popen(
        [sys.executable, "-m", "im.bench.relay", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_raise_child_nofile,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    match = re.search(r"relay listening on (\S+)", line)
    if not match:
        process.kill()
        raise BenchError(f"relay did not start: {line!r}")
    # Nothing else is printed; let stdout be (a pipe nobody reads stays empty).
    return Relay(address=match.group(1), pid=process.pid, process=process)
