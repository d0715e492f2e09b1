"""What recall and edit events do to the messages they refer to, worked out once for
every message store: the adapters load the targets, ask ``plan`` for the changes and
write them (SQL: one transaction; MongoDB: one ordered bulk write).

The rules (docs/protocol.md, "Events"):

- A recall marks its target recalled and erases its body and attachments, and the
  text of every edit event of that target (the edited text is the message's too).
- An edit replaces the target's body and sets ``edited_at`` to the event's
  server_ts, unless a later edit (higher seq) was applied already. An edit of a
  recalled message changes nothing, and its own text is erased.
- An event whose target is missing, in another conversation, or itself an event
  changes nothing; it stays stored as an event.

Applying the same events again changes nothing more (the router replays a batch
after a crash), so every change is written as "set to", never "add".
"""

from __future__ import annotations

from dataclasses import dataclass

from im import events
from im.v1 import wire_pb2


@dataclass(slots=True)
class Target:
    """What a store knows of a message that an event may act on."""

    msg_id: int
    conversation_id: str
    content_type: str
    recalled: bool
    edit_seq: int


@dataclass(frozen=True, slots=True)
class Recall:
    target: int
    conversation_id: str


@dataclass(frozen=True, slots=True)
class Edit:
    target: int
    body: bytes
    edited_at: int
    edit_seq: int


@dataclass(frozen=True, slots=True)
class EraseEvent:
    """An edit event that came after its target's recall: its text goes too."""

    msg_id: int


Change = Recall | Edit | EraseEvent


def is_event(m: wire_pb2.Message) -> bool:
    return m.content_type in (events.RECALL, events.EDIT)


def targets_of(messages: list[wire_pb2.Message]) -> list[int]:
    return list(dict.fromkeys(m.refers_to for m in messages if m.refers_to))


def plan(
    event_messages: list[wire_pb2.Message], targets: dict[int, Target]
) -> tuple[list[Change], list[int]]:
    """The changes ``event_messages`` (in seq order) make, given the ``targets`` as
    stored (updated in place as the plan goes); and the msg_ids of the events that
    have no target to act on."""
    changes: list[Change] = []
    orphans: list[int] = []
    for e in event_messages:
        target = targets.get(e.refers_to)
        if (
            target is None
            or target.conversation_id != e.conversation_id
            or events.is_reserved(target.content_type)
        ):
            orphans.append(e.msg_id)
            continue
        if e.content_type == events.RECALL:
            # Always written, even when recalled already: a crash may have stopped a
            # non-transactional store between the target and its edit events.
            target.recalled = True
            changes.append(Recall(target.msg_id, target.conversation_id))
        elif e.content_type == events.EDIT:
            if target.recalled:
                changes.append(EraseEvent(e.msg_id))
            elif e.seq > target.edit_seq:
                target.edit_seq = e.seq
                changes.append(Edit(target.msg_id, bytes(e.body), e.server_ts, e.seq))
    return changes, orphans
