"""Members' own conversation settings in the group service: set by a member only,
validated, listed with the user's conversations, muted members found for push, and
forgotten when the member leaves."""

from __future__ import annotations

import uuid

import grpc
import pytest

from im.clock import FakeClock
from im.db import create_schema, make_engine
from im.v1 import group_pb2
from services.group.settings import MAX_MUTE_AHEAD_MS
from services.group.settings_store import Patch, SettingsStore
from tests.services.group.helpers import Stub, add, create_group, remove, status_of


def patch(**fields) -> group_pb2.MemberSettingsPatch:  # type: ignore[no-untyped-def]
    return group_pb2.MemberSettingsPatch(**fields)


async def set_settings(stub: Stub, conv: str, user: int, **fields) -> group_pb2.MemberSettings:  # type: ignore[no-untyped-def]
    reply = await stub.SetMemberSettings(
        group_pb2.MemberSettingsSetRequest(
            conversation_id=conv, user_id=user, patch=patch(**fields)
        )
    )
    return reply.settings


async def listed(stub: Stub, user: int) -> dict[str, group_pb2.MemberSettings]:
    reply = await stub.ListUserConversations(group_pb2.ListUserConversationsRequest(user_id=user))
    return {e.conversation.conversation_id: e.settings for e in reply.conversations}


async def muted(stub: Stub, conv: str, users: list[int]) -> list[int]:
    reply = await stub.MutedMembers(
        group_pb2.MemberSettingsMutedRequest(
            queries=[group_pb2.MemberSettingsMutedQuery(conversation_id=conv, user_ids=users)]
        )
    )
    return sorted(u for q in reply.muted for u in q.user_ids)


async def test_a_member_sets_its_own_settings_and_only_what_it_names_changes(groups: Stub) -> None:
    conv = (await create_group(groups, 1, [2])).conversation_id
    first = await set_settings(groups, conv, 2, pinned=True, name="  work  ")
    assert (first.pinned, first.name, first.muted_until, first.archived) == (True, "work", 0, False)
    assert first.updated_at > 0
    second = await set_settings(groups, conv, 2, muted_until=-1)
    assert (second.pinned, second.name, second.muted_until) == (True, "work", -1)
    mine, theirs = await listed(groups, 2), await listed(groups, 1)
    assert mine[conv].pinned and mine[conv].muted_until == -1
    # The owner never set anything: defaults, not the other member's settings.
    assert theirs[conv] == group_pb2.MemberSettings(conversation_id=conv, user_id=1)


async def test_settings_of_a_non_member_or_invalid_values_are_refused(groups: Stub) -> None:
    conv = (await create_group(groups, 1, [2])).conversation_id
    assert await status_of(lambda: set_settings(groups, conv, 9, pinned=True)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    for bad in (
        {"muted_until": -2},
        {"muted_until": 2**62},
        {"name": "x" * 65},
        {"name": "a\x00b"},
        {},
    ):
        code = await status_of(lambda bad=bad: set_settings(groups, conv, 2, **bad))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, bad
    assert await status_of(lambda: set_settings(groups, "nonsense", 2, pinned=True)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_muted_members_are_those_muted_forever_or_until_later(groups: Stub) -> None:
    conv = (await create_group(groups, 1, [2, 3, 4, 5])).conversation_id
    await set_settings(groups, conv, 2, muted_until=-1)
    await set_settings(groups, conv, 3, muted_until=1)  # long past: not muted
    await set_settings(groups, conv, 4, pinned=True)
    assert await muted(groups, conv, [1, 2, 3, 4, 5]) == [2]
    await set_settings(groups, conv, 2, muted_until=0)
    assert await muted(groups, conv, [1, 2, 3, 4, 5]) == []


async def test_leaving_forgets_the_settings(groups: Stub) -> None:
    conv = (await create_group(groups, 1, [2])).conversation_id
    await set_settings(groups, conv, 2, muted_until=-1, pinned=True)
    await remove(groups, conv, 2, 2)
    await add(groups, conv, 1, [2])
    assert (await listed(groups, 2))[conv] == group_pb2.MemberSettings(
        conversation_id=conv, user_id=2
    )


def test_mute_until_a_time_ends_with_the_clock(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    create_schema(engine)
    _add_member(engine, "g:1", 2)
    clock = FakeClock()
    store = SettingsStore(engine, clock)
    store.set("g:1", 2, Patch(muted_until=clock.wall_ms() + 60_000))
    assert store.muted([("g:1", [2])]) == {"g:1": [2]}
    clock.advance(61)
    assert store.muted([("g:1", [2])]) == {}
    assert MAX_MUTE_AHEAD_MS > 60_000


@pytest.mark.integration
def test_settings_on_mariadb(mysql_url: str) -> None:
    from im.db import MemberRow, MemberSettingsRow

    engine = make_engine(mysql_url)
    # The tables this store uses, whatever revision a shared test database is at (the
    # migration itself is tested in tests/im/test_migrations.py).
    for table in (MemberRow.__table__, MemberSettingsRow.__table__):
        table.create(engine, checkfirst=True)
    conv = f"g:{uuid.uuid4().int % 10**12}"
    _add_member(engine, conv, 5)
    store = SettingsStore(engine, FakeClock())
    first = store.set(conv, 5, Patch(pinned=True, name="ünïcode ✓"))
    second = store.set(conv, 5, Patch(muted_until=-1))
    assert (second.pinned, second.name, second.muted_until) == (True, "ünïcode ✓", -1)
    assert first.updated_at <= second.updated_at
    assert store.of_user(5)[conv].muted_until == -1
    assert store.muted([(conv, [5, 6])]) == {conv: [5]}
    store.forget(conv, 5)
    assert conv not in store.of_user(5)


def _add_member(engine, conv: str, user: int) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import insert

    from im.db import MemberRow

    with engine.begin() as connection:
        connection.execute(
            insert(MemberRow.__table__),
            [
                {
                    "conversation_id": conv,
                    "user_id": user,
                    "role": 1,
                    "joined_seq": 0,
                    "delivered_seq": 0,
                    "read_seq": 0,
                    "joined_at": 0,
                }
            ],
        )
