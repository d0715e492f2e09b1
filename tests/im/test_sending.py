"""Server-side sends: the connector's idempotency record and bus record, so a
client_msg_id retried over any path keeps its first msg_id."""

from __future__ import annotations

import pytest

from im.adapters.memory import MemoryBus, MemoryKV
from im.clock import FakeClock
from im.config import Settings
from im.ids import MsgIdGenerator
from im.ports import Backends, BackendUnavailable
from im.sending import (
    ACK_RECORD,
    MAX_CLIENT_MSG_ID,
    ServerSender,
    client_msg_id_problem,
    idempotency_key,
    server_client_msg_id,
)
from im.v1 import bus_pb2, wire_pb2


class DeadBus(MemoryBus):
    async def publish(self, topic: str, key: str, value: bytes) -> None:
        raise BackendUnavailable("bus", "down")


def sender(bus: MemoryBus, kv: MemoryKV, clock: FakeClock) -> ServerSender:
    backends = Backends(
        bus=bus,
        registry=None,
        presence=kv,
        sessions=kv,  # type: ignore[arg-type]
        idempotency=kv,
        rate_limits=kv,
    )
    return ServerSender(Settings(), backends, MsgIdGenerator(3, clock), clock)


def message(cid: str = "c1") -> wire_pb2.Message:
    return wire_pb2.Message(
        conversation_id="d:1:2",
        sender_id=1,
        client_msg_id=cid,
        content_type="text/plain",
        body=b"hi",
    )


async def test_a_retry_keeps_the_first_msg_id_and_is_published_again():
    clock = FakeClock()
    bus, kv = MemoryBus(partitions=1), MemoryKV(clock)
    first = await sender(bus, kv, clock).send(message())
    clock.advance(1.0)
    again = await sender(bus, kv, clock).send(message())
    assert again == first
    records = [v for p in bus._logs[Settings().topic_messages] for _k, v in p]
    msgs = [bus_pb2.InboundMessage.FromString(v).message for v in records]
    assert [m.msg_id for m in msgs] == [first.msg_id, first.msg_id]
    assert msgs[0].server_ts == first.server_ts and msgs[0].seq == 0
    assert msgs[0].body == b"hi" and msgs[0].sender_id == 1


async def test_the_idempotency_record_is_the_connectors():
    clock = FakeClock()
    bus, kv = MemoryBus(partitions=1), MemoryKV(clock)
    sent = await sender(bus, kv, clock).send(message("x"))
    record = await kv.claim(idempotency_key(1, "x"), b"other", 60)
    assert record is not None and ACK_RECORD.unpack(record) == (sent.msg_id, sent.server_ts)


async def test_a_bus_failure_raises_and_a_retry_reuses_the_claim():
    clock = FakeClock()
    kv = MemoryKV(clock)
    with pytest.raises(BackendUnavailable):
        await sender(DeadBus(partitions=1), kv, clock).send(message())
    bus = MemoryBus(partitions=1)
    record = await kv.claim(idempotency_key(1, "c1"), b"other", 60)
    assert record is not None
    sent = await sender(bus, kv, clock).send(message())
    assert (sent.msg_id, sent.server_ts) == ACK_RECORD.unpack(record)


def test_the_servers_keys_are_a_space_clients_may_not_use():
    own = server_client_msg_id("g:5", "ev", 7, "name")
    assert own == "~g:5:ev:7:name"
    assert "server" in (client_msg_id_problem(own) or "")
    for chosen in ("7f1c2a9e-4b6d-4c1e-9a55-0d2f3b8e61aa", "recall:1", "a~b", "x" * 64):
        assert client_msg_id_problem(chosen) is None
    for bad in ("", "x" * (MAX_CLIENT_MSG_ID + 1)):
        assert "1..64" in (client_msg_id_problem(bad) or "")
