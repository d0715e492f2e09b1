"""Starting the suite: one service of a distributed suite (`imctl serve`) is safe by
default (without internal credentials it refuses to start, unless told it may run
open), serves its metrics on its own port, and a port that cannot be had stops the
start cleanly, in one line. Suites side by side in one process keep their metrics
apart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from im.adapters.factory import reset_memory
from im.config import Settings
from im.free_ports import free_port
from im.listeners import ListenError
from im.standalone import Suite, describe, imctl_command, serve_one

PORTS = (
    "gateway_port",
    "user_grpc_port",
    "group_grpc_port",
    "connector_grpc_port",
    "router_grpc_port",
    "gateway_grpc_port",
    "connector_tcp_port",
    "connector_ws_port",
)
IMCTL = Path(sys.executable).with_name("imctl")
OTHER_PORTS = (
    "USER_GRPC_PORT",
    "GROUP_GRPC_PORT",
    "CONNECTOR_GRPC_PORT",
    "ROUTER_GRPC_PORT",
    "GATEWAY_GRPC_PORT",
    "CONNECTOR_TCP_PORT",
    "CONNECTOR_WS_PORT",
)


async def test_a_service_without_internal_credentials_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        await serve_one("user", Settings(data_dir=tmp_path, user_grpc_port=0))
    assert "user: internal gRPC has no credentials" in str(caught.value.code)
    assert "IM_INTERNAL_INSECURE" in str(caught.value.code)
    assert not (tmp_path / "im.db").exists()  # refused before opening anything


async def test_one_service_serves_its_metrics_on_the_metrics_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    settings = Settings(
        data_dir=tmp_path, user_grpc_port=0, internal_insecure=True, metrics_port=port
    )
    running = asyncio.get_running_loop().create_task(serve_one("user", settings))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            deadline = asyncio.get_running_loop().time() + 20
            printed = ""
            # Until the service is up: it says so only on stdout, and /metrics answers
            # a moment before its start is over (a cancel in between would stop nothing).
            while "user is up" not in printed:
                assert asyncio.get_running_loop().time() < deadline, "not up"
                assert not running.done(), running
                await asyncio.sleep(0.05)
                printed += capsys.readouterr().out
            reply = await http.get(url)
        assert reply.status_code == 200
        assert "process_cpu_seconds_total" in reply.text
        assert "im_grpc_server_handled_total" in reply.text  # the user gRPC server's
    finally:
        running.cancel()  # run_until_signal stops the service on its way out
        with contextlib.suppress(asyncio.CancelledError):
            await running
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url)


async def test_suites_side_by_side_keep_their_metrics_apart(tmp_path: Path) -> None:
    suites = []
    try:
        for name in ("a", "b"):
            memory = f"memory://metrics-{name}-{uuid.uuid4().hex[:8]}"
            settings = Settings(
                data_dir=tmp_path / name,
                bus_url=memory,
                registry_url=memory,
                kv_url=memory,
                argon2_time_cost=1,
                argon2_memory_kib=8192,
                **{port: 0 for port in PORTS},
            )
            suite = Suite(settings)
            suites.append(suite)
            await suite.start()  # registering the same names twice would raise here
        first, second = suites
        assert first.metrics is not second.metrics
        for suite in suites:
            # The gateway's /metrics serves the suite's registry, every service in it.
            assert suite.services["gateway"].metrics is suite.metrics  # type: ignore[attr-defined]
            url = suite.endpoints()["gateway"]["http"] + "/metrics"
            async with httpx.AsyncClient(timeout=5) as http:
                text = (await http.get(url)).text
            for name in ("im_connector_connections", "im_router_records_total", "python_info"):
                assert name in text
    finally:
        for suite in suites:
            await suite.stop()
        for suite in suites:
            reset_memory(suite.settings.bus_url.removeprefix("memory://"))


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
            gateway_grpc_port=0,
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
