"""A standalone suite in a child process (`imctl standalone`), on free ports, for
end-to-end tests over real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

IMCTL = Path(sys.executable).with_name("imctl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def start_suite(data_dir: Path, **overrides: str) -> RunningSuite:
    ports = {
        name: free_port()
        for name in (
            "GATEWAY_PORT",
            "USER_GRPC_PORT",
            "GROUP_GRPC_PORT",
            "CONNECTOR_GRPC_PORT",
            "CONNECTOR_TCP_PORT",
            "CONNECTOR_WS_PORT",
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
        }
    )
    env.update({f"IM_{k.upper()}": v for k, v in overrides.items()})
    log_path = data_dir / "suite.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [str(IMCTL), "standalone"], env=env, stdout=log_file, stderr=subprocess.STDOUT
    )
    gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
    deadline = time.monotonic() + 30
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
            raise RuntimeError(f"suite not ready in 30 s:\n{log_path.read_text()}")
        time.sleep(0.1)
    return RunningSuite(
        gateway=gateway,
        tcp=f"127.0.0.1:{ports['CONNECTOR_TCP_PORT']}",
        ws=f"ws://127.0.0.1:{ports['CONNECTOR_WS_PORT']}/ws",
        process=process,
        log_path=log_path,
        env=env,
    )


def stop_suite(suite: RunningSuite) -> int:
    suite.process.send_signal(signal.SIGTERM)
    try:
        return suite.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        suite.process.kill()
        suite.process.wait()
        raise AssertionError(f"suite did not stop on SIGTERM:\n{suite.log()}") from None


@pytest.fixture(scope="session")
def suite(tmp_path_factory) -> RunningSuite:
    # Short heartbeat and retransmit timings so the timeout tests finish quickly.
    running = start_suite(
        tmp_path_factory.mktemp("suite"),
        heartbeat_interval="1.0",
        retransmit_timeout="0.5",
    )
    yield running
    code = stop_suite(running)
    assert code == 0, f"suite exited with {code} on SIGTERM:\n{running.log()}"
