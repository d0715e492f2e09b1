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
from im.standalone import Suite, describe, imctl_command, serve_one

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


def test_the_banner_names_imctl_as_it_can_be_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_bin = Path(sys.executable).parent
    monkeypatch.setattr("shutil.which", lambda name: None)  # not on PATH
    monkeypatch.chdir(venv_bin.parent.parent)  # e.g. the checkout, beside .venv
    assert imctl_command() == str(Path(venv_bin.parent.name) / "bin" / "imctl")
    monkeypatch.chdir(tmp_path)  # elsewhere: the whole path
    assert imctl_command() == str(venv_bin / "imctl")
    monkeypatch.setattr("shutil.which", lambda name: str(venv_bin / "imctl"))
    assert imctl_command() == "imctl"  # on PATH, and the same one


def test_the_banner_gives_the_gateway_only_when_it_is_not_the_default(tmp_path: Path) -> None:
    suite = Suite(Settings(data_dir=tmp_path))
    suite.services = {"gateway": FixedEndpoints({"http": "http://127.0.0.1:8080"})}  # type: ignore[dict-item]
    banner = describe(suite, imctl=".venv/bin/imctl")
    assert "  .venv/bin/imctl chat --user alice --password alicepass1 --to bob" in banner
    suite.services = {"gateway": FixedEndpoints({"http": "http://127.0.0.1:8081"})}  # type: ignore[dict-item]
    banner = describe(suite, imctl=".venv/bin/imctl")
    assert "  .venv/bin/imctl --gateway http://127.0.0.1:8081 register alice" in banner


class FixedEndpoints:
    def __init__(self, endpoints: dict[str, str]) -> None:
        self._endpoints = endpoints

    def endpoints(self) -> dict[str, str]:
        return self._endpoints
