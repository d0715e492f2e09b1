"""KafkaBus across broker restarts: each test runs a private Tansu, killed with SIGKILL
and started again on the same port: memory storage, so it comes back without topics,
records or group state, like a real cluster that lost its disks. (The contract both
buses keep is in test_bus_contract.py.)"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import kafka.errors
import pytest
from kafka.admin import KafkaAdminClient

from im.adapters.kafka_bus import (
    PRODUCER_FAILURE_LIMIT,
    KafkaBus,
    TopicLayoutError,
    _producer_is_broken,
)
from im.ports import BackendUnavailable, BusRecord
from tests.im.adapters.test_bus_contract import (
    PARTITIONS,
    TANSU_FETCH_WAIT_MS,
    PrivateTansu,
    _delete_topic,
    _kafka_unavailable_within,
    drain,
    values,
)

# ---------------------------------------------------- Kafka: broker restarts

# Not Tansu's default (4): a topic auto-created by the broker would show.
PRIVATE_PARTITIONS = 3

log = logging.getLogger("imtest.bus")


def _private_bus(broker: PrivateTansu, topics: list[str], name: str, **overrides: Any) -> KafkaBus:
    settings: dict[str, Any] = {
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
        "bootstrap_timeout_ms": 1000,
        "max_block_ms": 1000,
        "request_timeout_ms": 1000,
        "delivery_timeout_ms": 1500,
        "health_timeout": 1.0,
        "fetch_max_wait_ms": TANSU_FETCH_WAIT_MS,
        **overrides,
    }
    return KafkaBus(broker.bootstrap, PRIVATE_PARTITIONS, topics, name, **settings)


def _admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="imtest-admin", request_timeout_ms=2000
    )


def _partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Partitions per existing topic, as the broker says (0 for a missing one)."""
    admin = _admin(bootstrap)
    try:
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(topics)}
    finally:
        admin.close()


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = _admin(bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": -1}})
    finally:
        admin.close()


async def _publish_until_accepted(bus: KafkaBus, topic: str, value: bytes, within: float) -> float:
    """Publish until the bus accepts it; returns when (monotonic). Each attempt is
    bounded by the bus's own timeouts."""
    end = time.monotonic() + within
    while True:
        try:
            await asyncio.wait_for(bus.publish(topic, "k", value), 10)
            return time.monotonic()
        except BackendUnavailable as exc:
            assert time.monotonic() < end, f"publishes still fail {within} s later: {exc}"
            await asyncio.sleep(0.05)


@pytest.mark.integration
async def test_kafka_publishes_recover_after_a_broker_restart() -> None:
    broker = PrivateTansu()
    await broker.start()
    topic = "t.restart"
    bus = _private_bus(broker, [topic], "imtest-restart")
    try:
        await bus.start()
        await bus.publish(topic, "k", b"before")
        assert bus.epoch == 0

        await broker.kill()
        # The first publish waits for its delivery timeout (1.5 s); the ones after it
        # fail at the topic check, at once.
        for n in range(3):
            await _kafka_unavailable_within(bus.publish(topic, "k", f"down{n}".encode()), 1.5 + 2)

        await broker.start()
        restarted = time.monotonic()
        accepted = await _publish_until_accepted(bus, topic, b"after", within=15)
        log.warning("publish recovered %.2f s after the broker restart", accepted - restarted)
        assert accepted - restarted < 5

        # The broker came back without the topic: created again by the adapter, with
        # the configured count (nothing auto-created it with the broker's default),
        # and the epoch tells publishers that acknowledged records may be lost.
        assert bus.epoch == 1
        counts = await asyncio.to_thread(_partition_counts, broker.bootstrap, [topic])
        assert counts == {topic: PRIVATE_PARTITIONS}
        await bus.publish_many(topic, [(f"k{i}", b"more") for i in range(50)])
        assert await bus.healthy()
        assert bus.epoch == 1
    finally:
        await bus.close()
        await broker.kill()


@pytest.mark.integration
async def test_kafka_producer_is_replaced_when_another_process_recreated_the_topics() -> None:
    # Nothing published while the broker was away, and another process re-created the
    # topic before this bus noticed: its producer id is unknown to the new broker, and
    # kafka-python's idempotent producer never recovers from that by itself.
    broker = PrivateTansu()
    await broker.start()
    topic = "t.other"
    bus = _private_bus(broker, [topic], "imtest-other")
    try:
        await bus.start()
        await bus.publish(topic, "k", b"before")

        await broker.kill()
        await broker.start()
        restarted = time.monotonic()
        await asyncio.to_thread(_create_topic, broker.bootstrap, topic, PRIVATE_PARTITIONS)

        accepted = await _publish_until_accepted(bus, topic, b"after", within=15)
        log.warning("publish recovered %.2f s after the broker restart", accepted - restarted)
        assert accepted - restarted < 5
        # Not missing, but a new topic id: acknowledged records may be lost all the same.
        assert bus.epoch == 1
    finally:
        await bus.close()
        await broker.kill()


@pytest.mark.integration
async def test_kafka_health_follows_the_broker() -> None:
    broker = PrivateTansu()
    await broker.start()
    topic = "t.health"
    bus = _private_bus(broker, [topic], "imtest-health", health_timeout=1.0)
    try:
        await bus.start()
        assert await bus.healthy()

        await broker.kill()
        started = time.monotonic()
        assert not await bus.healthy()
        assert time.monotonic() - started < 1.0 + 0.5

        await broker.start()
        restarted = time.monotonic()
        while not await bus.healthy():
            assert time.monotonic() - restarted < 10, "still unhealthy 10 s after the restart"
            await asyncio.sleep(0.1)
        log.warning("healthy %.2f s after the broker restart", time.monotonic() - restarted)
        # The health check re-created the lost topic (an idle process heals too).
        assert bus.epoch == 1
        counts = await asyncio.to_thread(_partition_counts, broker.bootstrap, [topic])
        assert counts == {topic: PRIVATE_PARTITIONS}
    finally:
        await bus.close()
        await broker.kill()


@pytest.mark.integration
async def test_kafka_topic_with_another_partition_count_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = PrivateTansu()
    await broker.start()
    topic = "t.layout"
    await asyncio.to_thread(_create_topic, broker.bootstrap, topic, 2)
    bus = _private_bus(broker, [topic], "imtest-layout")
    try:
        with caplog.at_level(logging.ERROR, logger="im.bus.kafka"):
            with pytest.raises(TopicLayoutError) as info:
                await bus.start()
        message = str(info.value)
        assert f"topic {topic} has 2 partitions" in message
        assert f"the settings say {PRIVATE_PARTITIONS}" in message
        assert any(
            r.levelno == logging.ERROR and topic in r.getMessage() for r in caplog.records
        ), "logged at error level"

        assert not await bus.healthy()
        with pytest.raises(BackendUnavailable, match=f"topic {topic} has 2 partitions"):
            await bus.publish(topic, "k", b"v")
        with pytest.raises(BackendUnavailable, match=f"topic {topic} has 2 partitions"):
            await bus.consumer([topic], "g-layout").poll(10, 0.1)
        # Never "fixed" behind anyone's back either.
        counts = await asyncio.to_thread(_partition_counts, broker.bootstrap, [topic])
        assert counts == {topic: 2}
    finally:
        await bus.close()
        await broker.kill()


@pytest.mark.integration
async def test_kafka_consumer_rejoins_after_a_broker_restart() -> None:
    # Two processes, as in the suite: a connector that publishes and a router that
    # consumes, each with its own bus. The consumer is never recreated by its caller.
    broker = PrivateTansu()
    await broker.start()
    topic = "t.rejoin"
    publisher = _private_bus(broker, [topic], "imtest-connector")
    # Group requests wait on Tansu (a join about half the session timeout): the
    # default request timeout, not the short one of the other tests.
    router_bus = _private_bus(broker, [topic], "imtest-router", request_timeout_ms=10_000)
    consumer = router_bus.consumer([topic], "g-rejoin")
    received: list[BusRecord] = []
    stop = asyncio.Event()

    async def pump() -> None:
        # Like the router's loop: poll, "store", commit; back off on an outage.
        while not stop.is_set():
            try:
                received.extend(await consumer.poll(200, 0.2))
                await consumer.commit()
            except BackendUnavailable:
                await asyncio.sleep(0.1)

    async def wait_for(prefix: bytes, count: int, within: float) -> float:
        end = time.monotonic() + within
        while _seen(received, prefix) < count:
            assert time.monotonic() < end, f"{prefix!r}: {_seen(received, prefix)} of {count}"
            await asyncio.sleep(0.05)
        return time.monotonic()

    pumping: asyncio.Task | None = None
    try:
        await publisher.start()
        await router_bus.start()
        pumping = asyncio.create_task(pump())
        # Records first, so that the consumer's positions are well into the old logs
        # (about 30 per partition), which the restart empties.
        before = [(f"k{i % 12}", f"before-{i}".encode()) for i in range(90)]
        await publisher.publish_many(topic, before)
        # A first join takes ~3 s; on a busy machine it has been seen to need the
        # consumer's unstick (three session timeouts, 18 s) and a second join. The
        # restart below is what this test is about.
        await wait_for(b"before-", 90, within=45)
        generation = consumer.generation

        await broker.kill()
        killed = time.monotonic()
        while await publisher.healthy():  # the outage is seen before the restart
            assert time.monotonic() - killed < 5, "still healthy 5 s after the kill"
            await asyncio.sleep(0.05)
        await broker.start()
        restarted = time.monotonic()
        await _publish_until_accepted(publisher, topic, b"after-0", within=15)
        published = time.monotonic()
        # More than the old positions: a member still reading from those would skip
        # the first records of the new logs instead of waiting.
        after = [(f"k{i % 12}", f"after-{i}".encode()) for i in range(1, 150)]
        await publisher.publish_many(topic, after)
        got_all = await wait_for(b"after-", 150, within=30)
        log.warning(
            "consumer got every record published after the broker restart %.2f s after it "
            "(the publisher recovered in %.2f s)",
            got_all - restarted,
            published - restarted,
        )
        assert got_all - restarted < 20
        assert consumer.generation != generation
        assert publisher.epoch == 1 and router_bus.epoch == 1
        counts = await asyncio.to_thread(_partition_counts, broker.bootstrap, [topic])
        assert counts == {topic: PRIVATE_PARTITIONS}

        # Nothing of the new logs was skipped, and records keep flowing.
        await publisher.publish_many(
            topic, [(f"k{i % 12}", f"late-{i}".encode()) for i in range(30)]
        )
        await wait_for(b"late-", 30, within=10)
        got = {r.value for r in received if r.value.startswith(b"after-")}
        assert got == {f"after-{i}".encode() for i in range(150)}
    finally:
        stop.set()
        if pumping is not None:
            await asyncio.wait_for(pumping, 15)
        await router_bus.close()
        await publisher.close()
        await broker.kill()


@pytest.mark.integration
async def test_kafka_consume_only_process_recreates_the_topics_itself() -> None:
    # A router alone: nobody publishes or checks health after the restart. Its own
    # consumer must notice the loss and re-create the topics with the configured
    # count, before its kafka client's metadata requests could have the broker
    # auto-create them with its default count.
    broker = PrivateTansu()
    await broker.start()
    topic = "t.alone"
    bus = _private_bus(broker, [topic], "imtest-alone", request_timeout_ms=10_000)
    consumer = bus.consumer([topic], "g-alone")
    stop = asyncio.Event()

    async def pump() -> None:
        while not stop.is_set():
            try:
                await consumer.poll(100, 0.2)
            except BackendUnavailable:
                await asyncio.sleep(0.1)

    pumping = asyncio.create_task(pump())
    try:
        joined = time.monotonic()
        while consumer.generation == 0:
            assert time.monotonic() - joined < 20, "never joined"
            await asyncio.sleep(0.05)

        await broker.kill()
        await broker.start()
        restarted = time.monotonic()
        while bus.epoch == 0:
            assert time.monotonic() - restarted < 20, "the loss was not noticed"
            await asyncio.sleep(0.05)
        log.warning(
            "consumer noticed the lost topics %.2f s after the restart",
            time.monotonic() - restarted,
        )
        counts = await asyncio.to_thread(_partition_counts, broker.bootstrap, [topic])
        assert counts == {topic: PRIVATE_PARTITIONS}
        assert await bus.healthy()
    finally:
        stop.set()
        await asyncio.wait_for(pumping, 15)
        await bus.close()
        await broker.kill()


@pytest.mark.integration
async def test_kafka_only_the_lost_topic_starts_over(kafka_url: str) -> None:
    # One topic deleted and created again while the broker stays up (an operator, on
    # a real cluster): its consumers start that topic over from its new beginning,
    # and keep their positions in the other topic.
    bootstrap = kafka_url.removeprefix("kafka://").split("?")[0]
    lost, kept = (f"imtest.{uuid.uuid4().hex[:10]}" for _ in range(2))
    bus = KafkaBus(
        bootstrap,
        PARTITIONS,
        [lost, kept],
        "imtest-partial",
        session_timeout_ms=2000,
        fetch_max_wait_ms=TANSU_FETCH_WAIT_MS,
    )
    consumer = bus.consumer([lost, kept], f"g-{uuid.uuid4().hex[:10]}")
    try:
        await bus.start()
        for topic in (lost, kept):
            await bus.publish_many(topic, [(f"k{i}", f"old-{topic}".encode()) for i in range(8)])
        assert len(await drain(consumer, 16, 20.0)) == 16
        await consumer.commit()
        generation = consumer.generation

        await asyncio.to_thread(_delete_topic, bootstrap, lost)
        await bus.ensure_topics(verify=True)  # what a failure or a health check does
        assert bus.epoch == 1
        for topic in (lost, kept):
            await bus.publish_many(topic, [(f"k{i}", f"new-{topic}".encode()) for i in range(5)])

        records = await drain(consumer, 10, 20.0)
        records += await consumer.poll(100, 0.5)  # nothing more may come
        assert sorted(values(records)) == sorted(
            [f"new-{lost}".encode()] * 5 + [f"new-{kept}".encode()] * 5
        )
        assert consumer.generation != generation
    finally:
        await consumer.close()
        await bus.close()
        for topic in (lost, kept):
            await asyncio.to_thread(_delete_topic, bootstrap, topic)


def test_kafka_producer_failures_that_replace_it() -> None:
    # Errors kafka-python's idempotent producer never recovers from: at once.
    assert _producer_is_broken(kafka.errors.UnknownProducerIdError(), 1)
    assert _producer_is_broken(kafka.errors.OutOfOrderSequenceNumberError(), 1)
    assert _producer_is_broken(kafka.errors.ProducerFencedError(), 1)
    assert _producer_is_broken(kafka.errors.IllegalStateError(), 1)
    assert _producer_is_broken(
        kafka.errors.KafkaError("Unexpected error in InitProducerIdResponse: [Error -1]"), 1
    )
    # Anything not clearly transient: at once too.
    assert _producer_is_broken(kafka.errors.KafkaError("something odd"), 1)
    # Transient ones (the broker is away): only after several in a row.
    for transient in (kafka.errors.KafkaTimeoutError(), kafka.errors.KafkaConnectionError()):
        assert not _producer_is_broken(transient, PRODUCER_FAILURE_LIMIT - 1)
        assert _producer_is_broken(transient, PRODUCER_FAILURE_LIMIT)


def _seen(records: list[BusRecord], prefix: bytes) -> int:
    """Distinct values with that prefix (replays count once)."""
    return len({r.value for r in records if r.value.startswith(prefix)})
