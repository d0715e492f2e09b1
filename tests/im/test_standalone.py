"""One service of a distributed suite (`imctl serve`) is safe by default: without
internal credentials it refuses to start, unless told it may run open; it serves its
metrics on its own port. Suites side by side in one process keep their metrics apart."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from pathlib import Path

import httpx
import pytest

from im.adapters.factory import reset_memory
from im.config import Settings
from im.standalone import Suite, serve_one

PORTS = (
    "gateway_port",
    "user_grpc_port",
    "group_grpc_port",
    "connector_grpc_port",
    "router_grpc_port",
    "connector_tcp_port",
    "connector_ws_port",
)


async def test_a_service_without_internal_credentials_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        await serve_one("user", Settings(data_dir=tmp_path, user_grpc_port=0))
    assert "user: internal gRPC has no credentials" in str(caught.value.code)
    assert "IM_INTERNAL_INSECURE" in str(caught.value.code)
    assert not (tmp_path / "im.db").exists()  # refused before opening anything


async def test_one_service_serves_its_metrics_on_the_metrics_port(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        data_dir=tmp_path, user_grpc_port=0, internal_insecure=True, metrics_port=port
    )
    running = asyncio.get_running_loop().create_task(serve_one("user", settings))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            deadline = asyncio.get_running_loop().time() + 20
            while True:  # until the service is up (it says so only on stdout)
                try:
                    reply = await http.get(url)
                    break
                except httpx.ConnectError:
                    assert asyncio.get_running_loop().time() < deadline, "no /metrics"
                    assert not running.done(), running
                    await asyncio.sleep(0.05)
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
