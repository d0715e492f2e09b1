"""Several inbound messages as one bus record.

A connector publishes the messages bound for one partition at once as one record (an
``InboundBatch``: the serialized ``InboundMessage``s side by side, not re-encoded);
the router unpacks it. Per-record costs of the bus client (kafka-python builds,
tracks and acknowledges each record in Python on both ends) are then paid per
partition and flush instead of per message.
"""

from __future__ import annotations

from collections.abc import Callable

from im.v1 import bus_pb2

Packer = Callable[[list[bytes]], bytes]

# The first byte of a serialized InboundBatch: field 15, length-delimited. An
# InboundMessage starts with one of its own fields (all numbered below 15).
BATCH_TAG = (15 << 3 | 2).to_bytes(1, "big")


def pack(values: list[bytes]) -> bytes:
    """Serialized InboundMessages -> one record value."""
    return bus_pb2.InboundBatch(messages=values).SerializeToString()


def unpack(value: bytes) -> list[bytes]:
    """A record value -> the serialized InboundMessages it holds (itself if single)."""
    if value[:1] == BATCH_TAG:
        return list(bus_pb2.InboundBatch.FromString(value).messages)
    return [value]


def by_partition(
    records: list[tuple[str, bytes]], partition_of: Callable[[str], int], packer: Packer
) -> list[tuple[int, str, bytes]]:
    """(partition, key, value) per partition the records go to, in first-seen order:
    one record as it is, several packed (in their order) under the first one's key.
    For the bus adapters: the key's partition is theirs to know."""
    groups: dict[int, list[tuple[str, bytes]]] = {}
    for key, value in records:
        groups.setdefault(partition_of(key), []).append((key, value))
    out = []
    for partition, group in groups.items():
        value = group[0][1] if len(group) == 1 else packer([v for _k, v in group])
        out.append((partition, group[0][0], value))
    return out
