"""Recall and edit events, as the router stores them: once a batch's messages are
stored, the events among them are applied to the messages they refer to (the message
store's ``apply_events``), before they are delivered, so a client that fetches history
on receiving an event sees its effect. Only batches with events pay the extra call.

A replayed batch applies its events again: applying is idempotent. An event without a
target (missing, in another conversation) stays stored as an event and changes
nothing; it is logged, never a reason to fail the batch."""

from __future__ import annotations

import logging

from im.adapters.event_plan import is_event
from im.ports import MessageStore
from im.v1 import wire_pb2

log = logging.getLogger("im.router")


async def apply_events(store: MessageStore, stored: list[wire_pb2.Message]) -> tuple[int, int]:
    """Applies the events among ``stored`` (new and replayed messages of a batch);
    returns (events applied, events without a target)."""
    found = [m for m in stored if is_event(m)]
    if not found:
        return 0, 0
    found.sort(key=lambda m: (m.conversation_id, m.seq))
    orphans = await store.apply_events(found)
    if orphans:
        by_id = {m.msg_id: m for m in found}
        for msg_id in orphans:
            m = by_id[msg_id]
            log.warning(
                "event %s (%s) refers to %s, not a message of its conversation: "
                "stored, changes nothing",
                msg_id,
                m.content_type,
                m.refers_to,
                extra={"conversation_id": m.conversation_id},
            )
    return len(found), len(orphans)
