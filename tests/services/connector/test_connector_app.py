"""The connector's readiness: not serving without a registry session, without a bus
it can publish to (a producer), or while draining; the bus is asked every few seconds
of the (fake) clock, not at every look."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2

from im.adapters.memory import MemoryBus, MemoryKV, MemoryRegistry
from im.clock import FakeClock
from im.config import Settings
from im.ports import Backends
from services.connector.app import BUS_CHECK_EVERY, ConnectorApp


class Bus(MemoryBus):
    """An in-process bus whose broker and producer the test takes away."""

    def __init__(self) -> None:
        super().__init__(8)
        self.reachable = True
        self.producer = True
        self.asked = 0

    async def healthy(self) -> bool:
        self.asked += 1
        return self.reachable

    async def producer_ready(self) -> bool:
        return self.producer


class Registry(MemoryRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.session = True

    def healthy(self) -> bool:
        return self.session


@pytest.fixture
async def app(tmp_path) -> tuple[ConnectorApp, Bus, Registry, FakeClock]:  # type: ignore[no-untyped-def]
    kv, bus, registry, clock = MemoryKV(), Bus(), Registry(), FakeClock()
    backends = Backends(
        bus=bus, registry=registry, presence=kv, sessions=kv, idempotency=kv, rate_limits=kv
    )
    return ConnectorApp(Settings(data_dir=tmp_path), backends, clock=clock), bus, registry, clock


async def health(app: ConnectorApp) -> int:
    reply = await app._grpc._health.Check(health_pb2.HealthCheckRequest(service=""), None)
    return reply.status


async def test_no_bus_producer_no_registry_session_not_serving(app) -> None:  # type: ignore[no-untyped-def]
    connector, bus, registry, clock = app
    await connector._report_health()
    assert connector.not_serving_reason() is None

    bus.producer = False  # e.g. the broker refuses to give it a producer id
    clock.advance(BUS_CHECK_EVERY)
    await connector._report_health()
    assert connector.not_serving_reason() == "no bus producer (the bus does not answer)"
    assert await health(connector) == health_pb2.HealthCheckResponse.NOT_SERVING

    bus.producer = True
    bus.reachable = False  # the broker is gone
    clock.advance(BUS_CHECK_EVERY)
    await connector._report_health()
    assert connector.not_serving_reason() is not None

    bus.reachable = True
    registry.session = False  # its registry entry went with the session
    clock.advance(BUS_CHECK_EVERY)
    await connector._report_health()
    assert connector.not_serving_reason() == "no registry session"

    registry.session = True
    await connector._report_health()
    assert connector.not_serving_reason() is None
    assert await health(connector) == health_pb2.HealthCheckResponse.SERVING


async def test_the_bus_is_asked_every_few_seconds(app) -> None:  # type: ignore[no-untyped-def]
    connector, bus, _registry, clock = app
    for _ in range(4):  # the health loop runs every second
        await connector._report_health()
        clock.advance(0.5)
    assert bus.asked == 1
    clock.advance(BUS_CHECK_EVERY)
    await connector._report_health()
    assert bus.asked == 2
