"""Several inbound messages as one bus record: packed without re-encoding, told apart
from a single message by the first byte, grouped per partition in order."""

from __future__ import annotations

from im import buspack
from im.v1 import bus_pb2, wire_pb2


def inbound(msg_id: int) -> bytes:
    message = wire_pb2.Message(msg_id=msg_id, conversation_id="d:1:2", sender_id=1, body=b"x")
    return bus_pb2.InboundMessage(message=message).SerializeToString()


def test_a_packed_record_unpacks_to_its_messages_in_order() -> None:
    values = [inbound(i) for i in (1, 2, 3)]
    packed = buspack.pack(values)
    assert packed[:1] == buspack.BATCH_TAG
    assert buspack.unpack(packed) == values


def test_a_single_message_is_its_own_record() -> None:
    value = inbound(7)
    assert value[:1] != buspack.BATCH_TAG
    assert buspack.unpack(value) == [value]
    # Not mistaken for a batch, even as a (meaningless) InboundBatch parse would try.
    assert bus_pb2.InboundMessage.FromString(buspack.unpack(value)[0]).message.msg_id == 7


def test_records_are_grouped_per_partition_in_their_order() -> None:
    records = [("a", b"1"), ("b", b"2"), ("c", b"3"), ("a", b"4")]
    partition = {"a": 0, "b": 1, "c": 0}
    out = buspack.by_partition(records, partition.__getitem__, lambda vs: b"+".join(vs))
    assert out == [(0, "a", b"1+3+4"), (1, "b", b"2")]  # a lone record goes as it is
