"""The router's readiness: NOT_SERVING while it holds no partition for longer than a
rebalance takes (fake clock, no sleeping), serving again once it holds some."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from im.adapters.memory import MemoryBus, MemoryKV, MemoryRegistry
from im.clock import FakeClock
from im.config import Settings
from im.ports import Backends, BusRecord
from services.router.app import RouterApp


class Consumer:
    """A group member whose assignment the test sets."""

    def __init__(self) -> None:
        self.generation = 1
        self.assigned = 8

    async def poll(self, max_records: int, timeout: float) -> list[BusRecord]:
        return []

    async def commit(self) -> None: ...

    async def rewind(self) -> None: ...

    async def close(self) -> None: ...


@pytest.fixture
async def app(tmp_path) -> AsyncIterator[tuple[RouterApp, FakeClock]]:  # type: ignore[no-untyped-def]
    kv = MemoryKV()
    backends = Backends(
        bus=MemoryBus(8),
        registry=MemoryRegistry(),
        presence=kv,
        sessions=kv,
        idempotency=kv,
        rate_limits=kv,
    )
    clock = FakeClock()
    settings = Settings(data_dir=tmp_path, router_unassigned_timeout=30.0)
    app = RouterApp(settings, backends, clock=clock)
    try:
        yield app, clock
    finally:
        await app.store.close()


async def test_an_empty_assignment_longer_than_a_rebalance_is_not_serving(app) -> None:  # type: ignore[no-untyped-def]
    router_app, clock = app
    router, consumer = router_app.router, Consumer()
    assert router_app.not_serving_reason() == "has not joined its consumer group"
    await router.turn(consumer)
    assert router_app.serving()

    consumer.assigned = 0  # a rebalance took the partitions away
    await router.turn(consumer)
    clock.advance(29.0)
    await router.turn(consumer)
    assert router_app.serving(), "a rebalance is not an outage"
    clock.advance(2.0)
    await router.turn(consumer)
    assert router_app.not_serving_reason() == "has held no partition for 31 s"

    consumer.assigned = 3  # the group gave it some again
    await router.turn(consumer)
    assert router_app.serving()
    consumer.assigned = 0
    await router.turn(consumer)
    clock.advance(10.0)
    await router.turn(consumer)
    assert router_app.serving(), "the timer starts afresh at each empty assignment"


async def test_the_other_reasons_are_named(app) -> None:  # type: ignore[no-untyped-def]
    router_app, clock = app
    router = router_app.router
    await router.turn(Consumer())
    router.failing = 3
    assert router_app.not_serving_reason() == "its last 3 batches failed"
    router.failing = 0
    clock.advance(31.0)  # no loop turn completed meanwhile
    assert router_app.not_serving_reason() == "its loop is stuck"
