"""Bus records as the router takes them: decoded, checked one by one, and the ones
that cannot be applied turned into dead letters with the reason, so that one bad
record never fails the batch it came in."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from im import buspack, tracing
from im.config import Settings
from im.ids import is_valid_conversation_id
from im.ports import BusRecord, DeadLetter
from im.v1 import bus_pb2, wire_pb2

MAX_SEQ = (1 << 63) - 1  # what the cursor columns and the stores can hold
Identity = tuple[str, int, str]  # conversation, sender, client_msg_id


@dataclass(slots=True)
class Batch:
    """One poll's records, sorted by kind; ``letters`` holds what was set aside."""

    messages: list[wire_pb2.Message] = field(default_factory=list)
    reports: list[bus_pb2.CursorReport] = field(default_factory=list)
    membership: list[bus_pb2.MembershipEvent] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    # Where each message came from, to set it aside later if the store refuses it:
    # by msg_id, and by identity for one re-identified after a msg_id collision.
    origins: dict[int | Identity, BusRecord] = field(default_factory=dict)
    # msg_id -> the Send's traceparent, for the messages that carry one (only looked
    # at when traces are recorded).
    traces: dict[int, str] = field(default_factory=dict)


def identity(m: wire_pb2.Message) -> Identity:
    return (m.conversation_id, m.sender_id, m.client_msg_id)


def dead_letter(record: BusRecord, reason: str, now_ms: int) -> DeadLetter:
    # The id names the record (where it was and what it held): seen again after a
    # rewind, it is the same letter, stored once.
    where = f"{record.topic}/{record.partition}/{record.offset}/".encode()
    letter_id = hashlib.blake2b(where + record.value, digest_size=16).hexdigest()
    return DeadLetter(
        letter_id=letter_id,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        reason=reason,
        at_ms=now_ms,
    )


def message_letter(
    batch: Batch, settings: Settings, m: wire_pb2.Message, reason: str, now_ms: int
) -> DeadLetter:
    """A dead letter for a message the store refused, from its original record."""
    record = batch.origins.get(m.msg_id) or batch.origins.get(identity(m))
    if record is None:  # cannot happen for a message of this batch; keep what we have
        value = bus_pb2.InboundMessage(message=m).SerializeToString()
        record = BusRecord(settings.topic_messages, -1, -1, m.conversation_id, value)
    return dead_letter(record, reason, now_ms)


def decode(records: list[BusRecord], settings: Settings, now_ms: int) -> Batch:
    batch = Batch()
    for record in _unpacked(records, settings, batch, now_ms):
        try:
            problem = _take(batch, record, settings)
        except (DecodeError, RuntimeWarning, ValueError) as exc:
            problem = f"undecodable: {exc}"
        if problem is not None:
            batch.letters.append(dead_letter(record, problem, now_ms))
    return batch


def _unpacked(
    records: list[BusRecord], settings: Settings, batch: Batch, now_ms: int
) -> Iterator[BusRecord]:
    """The records with each packed one (several messages a connector published at
    once) opened into one record per message, at the same place on the bus: each
    is checked, stored or set aside on its own."""
    for record in records:
        if record.topic != settings.topic_messages or record.value[:1] != buspack.BATCH_TAG:
            yield record
            continue
        try:
            values = buspack.unpack(record.value)
        except (DecodeError, RuntimeWarning, ValueError) as exc:
            batch.letters.append(dead_letter(record, f"undecodable batch: {exc}", now_ms))
            continue
        for value in values:
            yield BusRecord(record.topic, record.partition, record.offset, record.key, value)


def _take(batch: Batch, record: BusRecord, settings: Settings) -> str | None:
    """File one record into the batch; returns why it cannot be applied, if so."""
    if record.topic == settings.topic_messages:
        inbound = bus_pb2.InboundMessage.FromString(record.value)
        message = inbound.message
        problem = message_problem(message)
        if problem is None:
            batch.messages.append(message)
            batch.origins.setdefault(message.msg_id, record)
            batch.origins.setdefault(identity(message), record)
            if tracing.enabled and inbound.traceparent:
                batch.traces[message.msg_id] = inbound.traceparent
        return problem
    if record.topic == settings.topic_cursors:
        report = bus_pb2.CursorReport.FromString(record.value)
        problem = report_problem(report)
        if problem is None:
            batch.reports.append(report)
        return problem
    if record.topic == settings.topic_membership:
        event = bus_pb2.MembershipEvent.FromString(record.value)
        if not is_valid_conversation_id(event.conversation_id):
            return f"membership event for a malformed conversation {event.conversation_id[:80]!r}"
        batch.membership.append(event)
        return None
    return f"record from an unexpected topic {record.topic!r}"


def message_problem(m: wire_pb2.Message) -> str | None:
    if m.msg_id == 0:
        return "message without a msg_id"
    if m.sender_id <= 0:
        return f"message with an invalid sender_id {m.sender_id}"
    if not is_valid_conversation_id(m.conversation_id):
        return f"message for a malformed conversation {m.conversation_id[:80]!r}"
    return None


def report_problem(r: bus_pb2.CursorReport) -> str | None:
    if r.user_id <= 0:
        return f"cursor report with an invalid user_id {r.user_id}"
    if not is_valid_conversation_id(r.conversation_id):
        return f"cursor report for a malformed conversation {r.conversation_id[:80]!r}"
    if r.delivered_seq > MAX_SEQ or r.read_seq > MAX_SEQ:
        return f"cursor report with a seq out of range ({r.delivered_seq}, {r.read_seq})"
    return None
