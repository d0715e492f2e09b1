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


# Group lifecycle: membership and group changes, in the group's seq stream so every
# device shows them in order. Sender: the acting user (for a join by link, the
# joiner). Body: JSON, see docs/protocol.md ("System events").
GROUP_EVENT_PREFIX = "application/vnd.im.group."
GROUP_MEMBERS_ADDED = GROUP_EVENT_PREFIX + "members_added"  # actor_id, user_ids
GROUP_MEMBER_REMOVED = GROUP_EVENT_PREFIX + "member_removed"  # actor_id, user_ids
GROUP_MEMBER_LEFT = GROUP_EVENT_PREFIX + "member_left"  # actor_id, user_ids
GROUP_MEMBER_JOINED = GROUP_EVENT_PREFIX + "member_joined"  # actor_id, user_ids, approved_by
GROUP_ROLE_CHANGED = GROUP_EVENT_PREFIX + "role_changed"  # actor_id, user_ids, role
GROUP_OWNER_TRANSFERRED = GROUP_EVENT_PREFIX + "owner_transferred"  # actor_id, user_ids
GROUP_RENAMED = GROUP_EVENT_PREFIX + "renamed"  # actor_id, name
GROUP_DESCRIPTION_CHANGED = GROUP_EVENT_PREFIX + "description_changed"  # actor_id, description
GROUP_AVATAR_CHANGED = GROUP_EVENT_PREFIX + "avatar_changed"  # actor_id, avatar
GROUP_DISSOLVED = GROUP_EVENT_PREFIX + "dissolved"  # actor_id


def is_group_event(content_type: str) -> bool:
    return content_type.startswith(GROUP_EVENT_PREFIX)


# Not an event: what a stored message becomes when an operator erased its body (its
# sender's account was deleted with erase_messages). Body: empty.
ERASED = "application/vnd.im.erased"
