"""The connector's publisher: at once when idle, together while flights are out."""

from __future__ import annotations

import asyncio

import pytest

from im import buspack
from im.adapters.memory import MemoryBus
from services.connector.publisher import Publisher


class GatedBus(MemoryBus):
    """Holds every publish until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(partitions=1)
        self.gate = asyncio.Event()
        self.calls: list[int] = []

    async def publish_packed(self, topic, records, pack):  # type: ignore[no-untyped-def]
        self.calls.append(len(records))
        await self.gate.wait()
        await super().publish_packed(topic, records, pack)


async def settle() -> None:
    """Let every ready task run (publish -> flight task -> bus call)."""
    for _ in range(5):
        await asyncio.sleep(0)


def spawn(coro):  # type: ignore[no-untyped-def]
    return asyncio.get_running_loop().create_task(coro)


async def test_sends_arriving_during_flights_go_out_together() -> None:
    bus = GatedBus()
    publisher = Publisher(lambda: bus, "t", spawn, max_flights=2)
    first = asyncio.create_task(publisher.publish([("k", b"1")]))
    await settle()  # it takes off alone, at once
    second = asyncio.create_task(publisher.publish([("k", b"2")]))
    await settle()
    assert bus.calls == [1, 1] and publisher.flights == 2
    later = [asyncio.create_task(publisher.publish([("k", f"{i}".encode())])) for i in (3, 4, 5)]
    await settle()
    assert bus.calls == [1, 1]  # both flights out: the next ones wait together
    bus.gate.set()
    await asyncio.gather(first, second, *later)
    assert bus.calls == [1, 1, 3]
    records = await bus.consumer(["t"], "g").poll(10, 0.01)
    assert [buspack.unpack(r.value) for r in records] == [[b"1"], [b"2"], [b"3", b"4", b"5"]]
    assert publisher.flights == 0


async def test_a_failed_flight_fails_each_of_its_publishes() -> None:
    class Down(MemoryBus):
        async def publish_packed(self, topic, records, pack):  # type: ignore[no-untyped-def]
            raise ConnectionError("broker gone")

    publisher = Publisher(lambda: Down(1), "t", spawn)
    results = await asyncio.gather(
        publisher.publish([("k", b"1")]), publisher.publish([("k", b"2")]), return_exceptions=True
    )
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    assert publisher.flights == 0
    with pytest.raises(ConnectionError):
        await publisher.publish([("k", b"3")])  # and the next one tries again
