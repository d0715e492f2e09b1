"""The shared metrics plumbing: registries that never collide, the hot-path histogram,
the gRPC server interceptor (codes, types, timing) and the /metrics HTTP server."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from im.grpcutil import GrpcServer
from im.metrics import (
    Distribution,
    GrpcServerMetrics,
    MetricsRegistry,
    MetricsServer,
    histogram_family,
)

HEALTH = "grpc.health.v1.Health"
TEST_SERVICE = "test.Probe"

# ------------------------------------------------------------------ registries


def test_every_registry_has_the_process_and_python_collectors() -> None:
    first, second = MetricsRegistry(), MetricsRegistry()  # side by side: no collision
    for metrics in (first, second):
        names = {m.name for m in metrics.registry.collect()}
        assert {"process_cpu_seconds", "python_gc_objects_collected", "python_info"} <= names
    assert not list(MetricsRegistry(process_collectors=False).registry.collect())


def test_stats_collectors_read_at_scrape_time_and_refuse_a_second_name() -> None:
    from prometheus_client.core import CounterMetricFamily

    metrics = MetricsRegistry(process_collectors=False)
    seen = {"n": 1}
    families = lambda: [CounterMetricFamily("im_test_things", "Things.", value=seen["n"])]  # noqa: E731
    metrics.collect_stats(families)
    assert metrics.registry.get_sample_value("im_test_things_total") == 1
    seen["n"] = 5
    assert metrics.registry.get_sample_value("im_test_things_total") == 5
    with pytest.raises(ValueError, match="Duplicated"):
        metrics.collect_stats(families)


def test_grpc_server_metrics_are_one_per_registry() -> None:
    metrics = MetricsRegistry(process_collectors=False)
    assert metrics.grpc_server() is metrics.grpc_server()
    assert MetricsRegistry(process_collectors=False).grpc_server() is not metrics.grpc_server()


# ----------------------------------------------------------------- Distribution


def test_distribution_buckets_are_cumulative_and_inclusive() -> None:
    dist = Distribution((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 3.0):
        dist.observe(value)
    assert dist.count == 5
    assert dist.total == pytest.approx(4.65)
    assert dist.cumulative() == [("0.1", 2.0), ("1.0", 4.0), ("+Inf", 5.0)]


def test_histogram_family_exports_like_a_prometheus_histogram() -> None:
    metrics = MetricsRegistry(process_collectors=False)
    dist = Distribution((1, 10))
    dist.observe(2)
    metrics.collect_stats(
        lambda: [histogram_family("im_test_sizes", "Sizes.", [(("a",), dist)], ["part"])]
    )
    sample = metrics.registry.get_sample_value
    assert sample("im_test_sizes_bucket", {"part": "a", "le": "1.0"}) == 0
    assert sample("im_test_sizes_bucket", {"part": "a", "le": "10.0"}) == 1
    assert sample("im_test_sizes_bucket", {"part": "a", "le": "+Inf"}) == 1
    assert sample("im_test_sizes_count", {"part": "a"}) == 1
    assert sample("im_test_sizes_sum", {"part": "a"}) == 2


# ------------------------------------------------------------ gRPC interceptor


async def _fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("a bug in the handler")


async def _refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
    raise AssertionError("abort raises")


async def _set_code(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.NOT_FOUND)
    return b""


async def _count(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(int(request or b"0")):
        yield str(i).encode()


def _probe_handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        TEST_SERVICE,
        {
            "Fail": grpc.unary_unary_rpc_method_handler(_fail),
            "Refuse": grpc.unary_unary_rpc_method_handler(_refuse),
            "SetCode": grpc.unary_unary_rpc_method_handler(_set_code),
            "Count": grpc.unary_stream_rpc_method_handler(_count),
        },
    )


@pytest.fixture
async def served() -> AsyncIterator[tuple[MetricsRegistry, grpc.aio.Channel]]:
    metrics = MetricsRegistry(process_collectors=False)
    server = GrpcServer("127.0.0.1", 0, interceptors=[metrics.grpc_server()])
    server.add(
        lambda _servicer, srv: srv.add_generic_rpc_handlers((_probe_handlers(),)),
        None,
        TEST_SERVICE,
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield metrics, channel
    finally:
        await channel.close()
        await server.stop(0)


def handled(metrics: MetricsRegistry, service: str, method: str, kind: str, code: str) -> float:
    labels = {"grpc_service": service, "grpc_method": method, "grpc_type": kind, "grpc_code": code}
    return metrics.registry.get_sample_value("im_grpc_server_handled_total", labels) or 0


def timed(metrics: MetricsRegistry, service: str, method: str, kind: str) -> float:
    labels = {"grpc_service": service, "grpc_method": method, "grpc_type": kind}
    return metrics.registry.get_sample_value("im_grpc_server_handling_seconds_count", labels) or 0


async def _call(channel: grpc.aio.Channel, method: str, request: bytes = b"") -> Any:
    call = channel.unary_unary(f"/{TEST_SERVICE}/{method}")
    try:
        return await call(request, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()


async def test_calls_are_counted_by_method_and_code(served) -> None:
    metrics, channel = served
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(2):
        await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert handled(metrics, HEALTH, "Check", "unary", "OK") == 2
    assert timed(metrics, HEALTH, "Check", "unary") == 2
    with pytest.raises(grpc.aio.AioRpcError):  # the health service aborts: NOT_FOUND
        await health.Check(health_pb2.HealthCheckRequest(service="nobody"), timeout=5)
    assert handled(metrics, HEALTH, "Check", "unary", "NOT_FOUND") == 1

    assert await _call(channel, "Fail") == grpc.StatusCode.UNKNOWN
    assert handled(metrics, TEST_SERVICE, "Fail", "unary", "UNKNOWN") == 1
    assert await _call(channel, "Refuse") == grpc.StatusCode.PERMISSION_DENIED
    assert handled(metrics, TEST_SERVICE, "Refuse", "unary", "PERMISSION_DENIED") == 1
    assert await _call(channel, "SetCode") == grpc.StatusCode.NOT_FOUND
    assert handled(metrics, TEST_SERVICE, "SetCode", "unary", "NOT_FOUND") == 1
    # An unknown method never reaches a handler: nothing to count.
    assert await _call(channel, "Nope") == grpc.StatusCode.UNIMPLEMENTED
    assert timed(metrics, TEST_SERVICE, "Nope", "unary") == 0


async def test_streams_are_counted_when_they_end(served) -> None:
    metrics, channel = served
    count = channel.unary_stream(f"/{TEST_SERVICE}/Count")
    assert [r async for r in count(b"3", timeout=5)] == [b"0", b"1", b"2"]
    assert handled(metrics, TEST_SERVICE, "Count", "server_stream", "OK") == 1

    # The health service's Watch writes with context.write (a coroutine, not a
    # generator): counted once the caller goes away.
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    sample = lambda: handled(metrics, HEALTH, "Watch", "server_stream", "CANCELLED")  # noqa: E731
    deadline = asyncio.get_running_loop().time() + 5
    while sample() != 1:  # the server learns of the cancellation on its own time
        assert asyncio.get_running_loop().time() < deadline, "Watch never counted"
        await asyncio.sleep(0.01)


async def test_wrapped_handlers_are_made_once_per_method() -> None:
    metrics = GrpcServerMetrics(MetricsRegistry(process_collectors=False).registry)
    handler = grpc.unary_unary_rpc_method_handler(_fail)
    details = type("Details", (), {"method": f"/{TEST_SERVICE}/Fail"})()

    async def continuation(_details: Any) -> grpc.RpcMethodHandler:
        return handler

    first = await metrics.intercept_service(continuation, details)
    assert await metrics.intercept_service(continuation, details) is first
    assert first is not handler


# -------------------------------------------------------------- HTTP exposition


async def test_metrics_server_serves_the_registry_until_stopped() -> None:
    metrics = MetricsRegistry()
    server = MetricsServer("127.0.0.1", 0, metrics.registry, "test")
    await server.start()
    url = server.url()
    assert server.port and url == f"http://127.0.0.1:{server.port}/metrics"
    async with httpx.AsyncClient(timeout=5) as client:
        reply = await client.get(url)
        assert reply.status_code == 200
        assert "process_cpu_seconds_total" in reply.text
        await server.stop()
        with pytest.raises(httpx.ConnectError):
            await client.get(url)
    assert server.port == 0


async def test_a_taken_port_is_logged_not_fatal(caplog) -> None:
    caplog.set_level(logging.ERROR, "im.metrics")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = MetricsServer("127.0.0.1", taken.getsockname()[1], MetricsRegistry().registry, "x")
        await server.start()
    assert server.port == 0
    assert "x /metrics not served" in caplog.text
    await server.stop()  # nothing to stop: fine
