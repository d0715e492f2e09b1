"""The router's metrics move when their events happen, read from a registry the way a
scrape does; times from a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from im.clock import FakeClock
from im.metrics import MetricsRegistry
from im.ports import BusConsumer
from im.v1 import bus_pb2, wire_pb2
from services.router import metrics as router_metrics
from services.router.sequencer import Sequencer
from services.router.service import Router
from tests.services.router.harness import Harness, online


class Scrape:
    def __init__(self, router: Router, consumer: BusConsumer | None = None) -> None:
        self.metrics = MetricsRegistry(process_collectors=False)
        router_metrics.register(self.metrics, router, lambda: consumer)

    def __call__(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        assert value is not None, f"no sample {name}{labels}"
        return value


class SlowStore:
    """The harness's store, with every insert taking ``seconds`` of the fake clock."""

    def __init__(self, store: Any, clock: FakeClock, seconds: float) -> None:
        self._store, self._clock, self._seconds = store, clock, seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def insert_many(self, messages: list[wire_pb2.Message]) -> list[bool]:
        self._clock.advance(self._seconds)
        return await self._store.insert_many(messages)


async def publish(h: Harness, conv: str, msg_id: int, server_ts: int = 1) -> None:
    message = wire_pb2.Message(
        msg_id=msg_id, conversation_id=conv, sender_id=5, body=b"x", server_ts=server_ts
    )
    value = bus_pb2.InboundMessage(message=message).SerializeToString()
    await h.bus.publish(h.settings.topic_messages, conv, value)


def records(scrape: Scrape, outcome: str) -> float:
    return scrape("im_router_records_total", outcome=outcome)


async def test_records_by_outcome(harness: Harness) -> None:
    h = harness
    scrape = Scrape(h.router)
    await publish(h, "d:5:6", 100)
    await publish(h, "d:5:6", 101)
    await h.run_bus()
    assert records(scrape, "stored") == 2
    await publish(h, "d:5:6", 101)  # published again (a retransmit through another connector)
    await h.bus.publish(h.settings.topic_messages, "d:5:6", b"\xff not protobuf")
    await h.run_bus()
    assert records(scrape, "stored") == 2
    assert records(scrape, "replay") == 1
    assert records(scrape, "dead_lettered") == 1


async def test_batch_size_per_poll(harness: Harness) -> None:
    h = harness
    scrape = Scrape(h.router)
    for i in range(3):
        await publish(h, "d:5:6", 100 + i)
    consumer = h.consumer()
    try:
        await h.router.turn(consumer)  # one poll, one batch of 3
        await h.router.turn(consumer)  # nothing more: an empty poll is no batch
    finally:
        await consumer.close()
    assert scrape("im_router_batch_size_count") == 1
    assert scrape("im_router_batch_size_sum") == 3
    assert scrape("im_router_batch_size_bucket", le="2.0") == 0
    assert scrape("im_router_batch_size_bucket", le="5.0") == 1


async def test_store_and_delivery_seconds(harness: Harness) -> None:
    h = harness
    clock = FakeClock()
    store = SlowStore(h.router.store, clock, 0.04)
    router = Router(h.settings, h.router.backends, store, clock=clock)  # type: ignore[arg-type]
    scrape = Scrape(router)
    await online(h, 5, 6)
    # Acked 250 ms before the router got it; storing takes 40 ms more.
    await publish(h, "d:5:6", 100, server_ts=clock.wall_ms() - 250)
    consumer = h.consumer()
    try:
        await router.handle(await consumer.poll(100, 0.01), consumer)
        await router.flush()
    finally:
        await consumer.close()
        await router.channels.close()
        router.delivery.close()
    assert scrape("im_router_store_seconds_count") == 1
    assert scrape("im_router_store_seconds_sum") == pytest.approx(0.04)
    # One connector holds both devices: one hand-over of the message.
    assert len(h.connector.requests) == 1
    assert scrape("im_router_delivery_seconds_count") == 1
    assert scrape("im_router_delivery_seconds_sum") == pytest.approx(0.29)
    assert scrape("im_router_delivery_seconds_bucket", le="0.25") == 0
    assert scrape("im_router_delivery_seconds_bucket", le="0.5") == 1


async def test_consumer_lag_per_partition(harness: Harness) -> None:
    h = harness
    consumer = h.consumer()
    scrape = Scrape(h.router, consumer)
    try:
        for i in range(3):
            await publish(h, "d:5:6", 100 + i)
        lags = {
            (topic, partition): scrape(
                "im_router_consumer_lag", topic=topic, partition=str(partition)
            )
            for topic, partition in consumer.lag()
        }
        assert sum(lags.values()) == 3
        (busy,) = [key for key, n in lags.items() if n]
        assert busy[0] == h.settings.topic_messages
        await h.router.turn(consumer)
        assert scrape("im_router_consumer_lag", topic=busy[0], partition=str(busy[1])) == 0
    finally:
        await consumer.close()


def test_no_consumer_yet_means_no_lag_series(harness: Harness) -> None:
    scrape = Scrape(harness.router)
    assert (
        scrape.metrics.registry.get_sample_value(
            "im_router_consumer_lag", {"topic": "im.messages", "partition": "0"}
        )
        is None
    )


async def test_seq_conflicts(harness: Harness) -> None:
    h = harness
    scrape = Scrape(h.router)
    await publish(h, "d:5:6", 100)
    await h.run_bus()
    assert scrape("im_router_seq_conflicts_total") == 0
    # Another router numbered a message of the conversation meanwhile (a rebalance
    # this one missed): its counter is stale.
    other = wire_pb2.Message(msg_id=101, conversation_id="d:5:6", sender_id=6, server_ts=1)
    await Sequencer(h.router.store).store([other])
    await publish(h, "d:5:6", 102)
    await h.run_bus()
    assert scrape("im_router_seq_conflicts_total") == 1
    assert [m.seq for m in await h.router.store.history("d:5:6", 0, 10)] == [1, 2, 3]
