"""The in-process adapters of standalone mode: MemoryBus and MemoryKV."""

from __future__ import annotations

from collections import defaultdict

import pytest

from im.adapters.memory import MemoryBus, MemoryConsumer, MemoryKV, partition_for
from im.clock import FakeClock
from im.ports import BackendUnavailable, BusRecord

TOPIC = "im.messages"
GROUP = "im-router"


async def drain(consumer: MemoryConsumer, max_records: int = 1000) -> list[BusRecord]:
    """Everything the consumer can get right now."""
    records: list[BusRecord] = []
    while batch := await consumer.poll(max_records, timeout=0.01):
        records += batch
    return records


# --------------------------------------------------------------------------- bus


async def test_records_of_one_key_keep_their_order_in_one_partition() -> None:
    bus = MemoryBus(partitions=4)
    keys = [f"g:{n}" for n in range(10)]
    for i in range(20):
        await bus.publish_many(TOPIC, [(key, f"{key}#{i}".encode()) for key in keys])

    records = await drain(bus.consumer([TOPIC], GROUP))
    assert len(records) == 200
    per_key: dict[str, list[bytes]] = defaultdict(list)
    for record in records:
        assert record.partition == partition_for(record.key, 4)
        per_key[record.key].append(record.value)
    for key in keys:
        assert per_key[key] == [f"{key}#{i}".encode() for i in range(20)]


async def test_offsets_count_up_per_partition() -> None:
    bus = MemoryBus(partitions=2)
    for i in range(6):
        await bus.publish(TOPIC, "same-key", str(i).encode())
    records = await drain(bus.consumer([TOPIC], GROUP))
    assert [r.offset for r in records] == list(range(6))


async def test_group_resumes_after_its_last_commit() -> None:
    bus = MemoryBus(partitions=1)
    for i in range(10):
        await bus.publish(TOPIC, "k", str(i).encode())

    first = bus.consumer([TOPIC], GROUP)
    assert [r.value for r in await first.poll(4, timeout=0.01)] == [b"0", b"1", b"2", b"3"]
    await first.commit()
    # Taken but never committed: a crash here must replay them, not lose them.
    assert [r.value for r in await first.poll(2, timeout=0.01)] == [b"4", b"5"]
    await first.close()
    assert await first.poll(10, timeout=0.01) == []  # a closed consumer gets nothing

    second = bus.consumer([TOPIC], GROUP)
    assert [r.value for r in await drain(second)] == [str(i).encode() for i in range(4, 10)]

    # Another group has its own position.
    other = bus.consumer([TOPIC], "audit")
    assert len(await drain(other)) == 10


async def test_two_consumers_split_the_partitions_and_rebalance() -> None:
    bus = MemoryBus(partitions=4)
    keys = [f"k{n}" for n in range(40)]
    assert len({partition_for(k, 4) for k in keys}) == 4  # every partition gets data
    for key in keys:
        await bus.publish(TOPIC, key, key.encode())

    first = bus.consumer([TOPIC], GROUP)
    generation_alone = first.generation
    second = bus.consumer([TOPIC], GROUP)
    assert first.generation != generation_alone  # assignment changed

    got_first, got_second = await drain(first), await drain(second)
    partitions_first = {r.partition for r in got_first}
    partitions_second = {r.partition for r in got_second}
    assert partitions_first and partitions_second
    assert partitions_first.isdisjoint(partitions_second)
    assert sorted(r.key for r in got_first + got_second) == sorted(keys)

    # When one leaves, the other takes over every partition from the last commit.
    await first.commit()
    generation_shared = second.generation
    await first.close()
    assert second.generation != generation_shared
    replayed = await drain(second)
    assert sorted(r.key for r in replayed) == sorted(r.key for r in got_second)


async def test_poll_times_out_empty_and_wakes_on_publish() -> None:
    bus = MemoryBus(partitions=2)
    consumer = bus.consumer([TOPIC], GROUP)
    assert await consumer.poll(10, timeout=0.01) == []
    await bus.publish(TOPIC, "k", b"v")
    assert [r.value for r in await consumer.poll(10, timeout=1.0)] == [b"v"]
    assert await bus.healthy()
    await bus.close()
    assert not await bus.healthy()


async def test_a_closed_bus_is_unavailable() -> None:
    # The same error as a bus whose broker is down: callers retry later.
    bus = MemoryBus(partitions=2)
    await bus.close()
    with pytest.raises(BackendUnavailable) as info:
        await bus.publish(TOPIC, "k", b"v")
    assert info.value.backend == "bus"
    with pytest.raises(BackendUnavailable):
        await bus.publish_many(TOPIC, [("k", b"v")])


# ---------------------------------------------------------------------- presence


async def test_connect_returns_the_previous_connector_of_the_device() -> None:
    kv = MemoryKV(FakeClock())
    assert await kv.connect(1, "phone", "c1", ttl=60) is None
    assert await kv.connect(1, "phone", "c2", ttl=60) == "c1"
    assert await kv.connect(1, "laptop", "c1", ttl=60) is None  # another device
    routes = await kv.routes([1, 2])
    assert set(routes) == {1}
    assert {(r.device_id, r.connector_id) for r in routes[1]} == {("phone", "c2"), ("laptop", "c1")}


async def test_disconnect_only_by_the_connector_that_holds_the_device() -> None:
    kv = MemoryKV(FakeClock())
    await kv.connect(1, "phone", "c1", ttl=60)
    await kv.connect(1, "phone", "c2", ttl=60)  # moved to c2
    await kv.disconnect(1, "phone", "c1")  # the old connector's late goodbye
    assert [r.connector_id for r in (await kv.routes([1]))[1]] == ["c2"]
    await kv.disconnect(1, "phone", "c2")
    assert await kv.routes([1]) == {}


async def test_presence_expires_unless_refreshed_by_its_connector() -> None:
    clock = FakeClock()
    kv = MemoryKV(clock)
    await kv.connect(1, "phone", "c1", ttl=10)
    await kv.connect(2, "phone", "c1", ttl=10)
    clock.advance(8)
    await kv.refresh([(1, "phone"), (2, "phone")], "c1", ttl=10)
    await kv.refresh([(2, "phone")], "c-other", ttl=1000)  # not its holder: no effect
    clock.advance(8)
    assert set(await kv.routes([1, 2])) == {1, 2}
    clock.advance(3)
    assert await kv.routes([1, 2]) == {}
    # An expired entry is not a previous connection to kick.
    assert await kv.connect(1, "phone", "c3", ttl=10) is None


# --------------------------------------------------------------- sessions, keys


async def test_revoked_session_is_remembered_for_its_ttl() -> None:
    clock = FakeClock()
    kv = MemoryKV(clock)
    assert not await kv.is_revoked("s1")
    await kv.revoke("s1", ttl=30)
    assert await kv.is_revoked("s1")
    assert not await kv.is_revoked("s2")
    clock.advance(31)
    assert not await kv.is_revoked("s1")


async def test_idempotency_claim_release_and_expiry() -> None:
    clock = FakeClock()
    kv = MemoryKV(clock)
    assert await kv.claim("u1:c1", b"first", ttl=60) is None
    assert await kv.claim("u1:c1", b"second", ttl=60) == b"first"
    await kv.release("u1:c1")
    assert await kv.claim("u1:c1", b"third", ttl=60) is None
    clock.advance(61)
    assert await kv.claim("u1:c1", b"fourth", ttl=60) is None
    assert await kv.claim("u1:c1", b"fifth", ttl=60) == b"fourth"
