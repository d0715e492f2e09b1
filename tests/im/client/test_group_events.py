"""System events of a group as readable lines."""

from __future__ import annotations

import json

from im import events
from im.client.group_events import describe

NAMES = {1: "alice", 2: "bob", 3: "carol"}


def line(kind: str, **body: object) -> str | None:
    return describe(events.GROUP_EVENT_PREFIX + kind, json.dumps(body).encode(), NAMES.get)


def test_each_event_reads_as_a_sentence() -> None:
    assert line("members_added", actor_id=1, user_ids=[2, 3]) == "alice added bob, carol"
    assert line("member_removed", actor_id=1, user_ids=[2]) == "alice removed bob"
    assert line("member_left", actor_id=2, user_ids=[2]) == "bob left"
    assert line("member_joined", actor_id=3, user_ids=[3]) == "carol joined by invite link"
    assert line("member_joined", actor_id=1, user_ids=[3], approved_by=1) == (
        "carol joined (approved by alice)"
    )
    assert line("role_changed", actor_id=1, user_ids=[2], role="admin") == "alice made bob admin"
    assert line("owner_transferred", actor_id=1, user_ids=[2]) == "alice made bob the owner"
    assert line("renamed", actor_id=1, name="crew") == 'alice renamed the group to "crew"'
    assert line("description_changed", actor_id=2, description="x") == (
        "bob changed the description"
    )
    assert line("avatar_changed", actor_id=2, avatar="a") == "bob changed the group picture"
    assert line("dissolved", actor_id=1) == "alice dissolved the group"


def test_many_users_unknown_ids_and_garbage_still_read() -> None:
    assert line("members_added", actor_id=1, user_ids=[2, 3], count=5000) == (
        "alice added bob, carol and 4998 more"
    )
    assert line("members_added", actor_id=9, user_ids=[8]) == "user 9 added user 8"
    assert describe(events.GROUP_RENAMED, b"\xff\x00", NAMES.get) == (
        'someone renamed the group to ""'
    )
    assert line("something_new", actor_id=1) == "alice: something new"
    assert describe("text/plain", b"hi", NAMES.get) is None
