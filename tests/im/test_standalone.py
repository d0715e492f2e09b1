"""Starting the suite: one service of a distributed suite (`imctl serve`) is safe by
default (without internal credentials it refuses to start, unless told it may run
open), and a port that cannot be had stops the start cleanly, in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from im.config import Settings
from im.listeners import ListenError
from im.standalone import Suite, serve_one

IMCTL = Path(sys.executable).with_name("imctl")
OTHER_PORTS = (
    "USER_GRPC_PORT",
    "GROUP_GRPC_PORT",
    "CONNECTOR_GRPC_PORT",
    "ROUTER_GRPC_PORT",
    "CONNECTOR_TCP_PORT",
    "CONNECTOR_WS_PORT",
)


async def test_a_service_without_internal_credentials_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        await serve_one("user", Settings(data_dir=tmp_path, user_grpc_port=0))
    assert "user: internal gRPC has no credentials" in str(caught.value.code)
    assert "IM_INTERNAL_INSECURE" in str(caught.value.code)
    assert not (tmp_path / "im.db").exists()  # refused before opening anything


async def test_a_suite_that_cannot_start_leaves_nothing_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's port taken after the check (another process was quicker): the
    services already started are stopped again, and the error names the setting."""
    monkeypatch.setattr("im.standalone.check_ports", lambda *_: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(
            data_dir=tmp_path,
            gateway_port=taken.getsockname()[1],
            user_grpc_port=0,
            group_grpc_port=0,
            connector_grpc_port=0,
            router_grpc_port=0,
            connector_tcp_port=0,
            connector_ws_port=0,
        )
        suite = Suite(settings)
        with pytest.raises(ListenError, match="IM_GATEWAY_PORT"):
            await suite.start()
    assert suite.services == {} and suite.backends is None


def test_imctl_standalone_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "IM_DATA_DIR": str(tmp_path), "IM_GATEWAY_PORT": str(port)}
        env.update({f"IM_{name}": "0" for name in OTHER_PORTS})
        done = subprocess.run(
            [str(IMCTL), "standalone"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"imctl standalone: cannot listen on 127.0.0.1:{port} for the gateway HTTP: the port "
        f"is already in use; set IM_GATEWAY_PORT to a free port (e.g. IM_GATEWAY_PORT="
        f"{port + 1}) or stop what uses it"
    ]
