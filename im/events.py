"""Content types the server owns: events in a conversation's seq stream that act on
other messages or on the conversation (a recall, an edit). Clients read them in order,
like any message, but only the server may create them: a Send with one of these types
is refused, so no client can forge an event."""

from __future__ import annotations

RESERVED_PREFIX = "application/vnd.im."
# Recalls ``refers_to``: its body is no longer served. Body of the event: empty.
RECALL = "application/vnd.im.recall"
# Replaces the text of ``refers_to``. Body of the event: the new text (UTF-8).
EDIT = "application/vnd.im.edit"


def is_reserved(content_type: str) -> bool:
    return content_type.startswith(RESERVED_PREFIX)


# Not an event: what a stored message becomes when an operator erased its body (its
# sender's account was deleted with erase_messages). Body: empty.
ERASED = "application/vnd.im.erased"
