"""System events of a group (content types ``application/vnd.im.group.*``) as one
readable line, e.g. "alice added bob, carol"."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from im import events

_NAME_LIMIT = 80


def _name(name_of: Callable[[int], str | None], user_id: int) -> str:
    return name_of(user_id) or f"user {user_id}"


def _names(ids: Any, count: Any, name_of: Callable[[int], str | None]) -> str:
    """Up to 10 names; ``count`` (when the event names only the first ones) or the
    list's length says how many more."""
    if not isinstance(ids, list):
        return "someone"
    shown = [_name(name_of, uid) for uid in ids[:10] if isinstance(uid, int)]
    total = count if isinstance(count, int) and count > len(ids) else len(ids)
    more = total - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "") or "someone"


def describe(content_type: str, body: bytes, name_of: Callable[[int], str | None]) -> str | None:
    """The line for a group event, or None when ``content_type`` is not one. A body a
    newer server wrote (or garbage) still gives a line, never an exception."""
    if not events.is_group_event(content_type):
        return None
    kind = content_type.removeprefix(events.GROUP_EVENT_PREFIX)
    try:
        data = json.loads(body.decode("utf-8"))
        if not isinstance(data, dict):
            data = {}
    except (UnicodeDecodeError, ValueError):
        data = {}
    actor_id = data.get("actor_id")
    actor = _name(name_of, actor_id) if isinstance(actor_id, int) else "someone"
    users = _names(data.get("user_ids"), data.get("count"), name_of)

    def text(key: str) -> str:
        value = str(data.get(key, ""))
        return value if len(value) <= _NAME_LIMIT else value[: _NAME_LIMIT - 1] + "…"

    lines = {
        "members_added": f"{actor} added {users}",
        "member_removed": f"{actor} removed {users}",
        "member_left": f"{users} left",
        "member_joined": (
            f"{users} joined (approved by {actor})"
            if "approved_by" in data
            else f"{users} joined by invite link"
        ),
        "role_changed": f"{actor} made {users} {text('role') or 'a member'}",
        "owner_transferred": f"{actor} made {users} the owner",
        "renamed": f'{actor} renamed the group to "{text("name")}"',
        "description_changed": f"{actor} changed the description",
        "avatar_changed": f"{actor} changed the group picture",
        "dissolved": f"{actor} dissolved the group",
    }
    return lines.get(kind, f"{actor}: {kind.replace('_', ' ')}")


def mentioned_user_ids(body: bytes) -> list[int]:
    """The user ids an event's body names (actor, users, approver): the ones to look
    up before ``describe``."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    found = [data.get("actor_id"), data.get("approved_by")]
    users = data.get("user_ids")
    if isinstance(users, list):
        found += users[:10]
    return list(dict.fromkeys(uid for uid in found if isinstance(uid, int) and uid > 0))
