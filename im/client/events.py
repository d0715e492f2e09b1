"""Recall and edit events on the client side: they arrive like any message (live, in
sync and in history), in seq order, with a reserved content type and ``refers_to``.
``apply_event`` brings a local copy of the conversation up to date, the way the server
updates its store, so a client that keeps messages shows the current state:

    view: dict[int, wire_pb2.Message] = {}
    for m in messages:                  # live, synced or from history, in seq order
        if not apply_event(view, m):    # an event: applied to the message it names
            view[m.msg_id] = m          # an ordinary message: kept
"""

from __future__ import annotations

from collections.abc import MutableMapping

from im import events
from im.v1 import wire_pb2

RECALL = events.RECALL
EDIT = events.EDIT


def is_event(message: wire_pb2.Message) -> bool:
    """A message the server made to act on another one (never shown by itself). Group
    events (``application/vnd.im.group.*``) are not: they are shown, as lines."""
    return message.content_type in (RECALL, EDIT)


def apply_event(view: MutableMapping[int, wire_pb2.Message], event: wire_pb2.Message) -> bool:
    """Apply ``event`` to the message it refers to in ``view`` (msg_id -> message), if
    that message is there. Returns False for an ordinary message (not an event).

    Idempotent, like the server's: a recall erases the text for good; an edit after
    a recall, or an edit seen again, changes nothing wrong. A target not in ``view``
    (older than what the client keeps) is left alone: history shows it as it is now.
    """
    if not is_event(event):
        return False
    target = view.get(event.refers_to)
    if target is None or target.conversation_id != event.conversation_id:
        return True
    if event.content_type == RECALL:
        target.recalled = True
        target.body = b""
        del target.attachment_ids[:]
    elif event.content_type == EDIT and not target.recalled:
        if event.server_ts >= target.edited_at:
            target.body = event.body
            target.edited_at = event.server_ts
    return True


def display_text(message: wire_pb2.Message) -> str:
    """How a chat shows a message in its current state."""
    if message.recalled:
        return "(message recalled)"
    text = message.body.decode("utf-8", "replace")
    return f"{text} (edited)" if message.edited_at else text
