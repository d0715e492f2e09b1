"""Cursors and read receipts in the group service: forward-only moves, coalescing,
entries that are skipped rather than refused, stored reads, readers from cursors."""

from __future__ import annotations

import grpc

from im.v1 import group_pb2
from tests.services.group.helpers import (
    Stub,
    add,
    create_group,
    cursors,
    status_of,
    update_cursors,
)


async def test_cursors_only_move_forward(groups: Stub) -> None:
    group = (await create_group(groups, owner=1, members=[2])).conversation_id

    assert await update_cursors(groups, (group, 2, 10, 0)) == 1
    assert await cursors(groups, group, 2) == (10, 0)
    assert await update_cursors(groups, (group, 2, 4, 0)) == 0  # backwards: ignored
    assert await cursors(groups, group, 2) == (10, 0)
    assert await update_cursors(groups, (group, 2, 0, 6)) == 1  # 0 leaves delivered alone
    assert await cursors(groups, group, 2) == (10, 6)
    assert await update_cursors(groups, (group, 2, 0, 14)) == 1  # read pulls delivered up
    assert await cursors(groups, group, 2) == (14, 14)
    assert await update_cursors(groups, (group, 2, 14, 14)) == 0  # no change, none applied
    assert await update_cursors(groups, (group, 2, 0, 0)) == 0


async def test_cursor_updates_are_coalesced_per_member(groups: Stub) -> None:
    group = (await create_group(groups, owner=1, members=[2, 3])).conversation_id
    applied = await update_cursors(
        groups,
        (group, 2, 5, 0),
        (group, 2, 3, 0),
        (group, 2, 0, 4),
        (group, 2, 7, 2),
        (group, 3, 0, 8),
        (group, 99, 50, 50),  # not a member: ignored
        ("g:404", 2, 50, 50),  # no such conversation: ignored
    )
    assert applied == 2  # one row per member, not one per update
    assert await cursors(groups, group, 2) == (7, 4)
    assert await cursors(groups, group, 3) == (8, 8)
    assert await cursors(groups, group, 1) == (0, 0)


async def test_invalid_cursor_entries_are_skipped_not_the_request(groups: Stub) -> None:
    # One hostile or corrupt entry (a seq no BIGINT holds, a malformed id) must not
    # fail the batch of honest cursor moves it arrived with.
    group = (await create_group(groups, owner=1, members=[2])).conversation_id
    applied = await update_cursors(
        groups,
        (group, 1, 1 << 63, 0),
        (group, 1, 0, (1 << 64) - 1),
        ("not-a-conversation", 1, 5, 5),
        (group, 2, 3, 2),
    )
    assert applied == 1
    assert await cursors(groups, group, 1) == (0, 0)
    assert await cursors(groups, group, 2) == (3, 2)


def confirm(conversation_id: str, user_id: int, read_seq: int) -> group_pb2.CursorUpdate:
    return group_pb2.CursorUpdate(
        conversation_id=conversation_id, user_id=user_id, read_seq=read_seq, confirm_read=True
    )


async def test_stored_reads_name_only_real_members_at_that_seq(groups: Stub) -> None:
    group = (await create_group(groups, owner=1, members=[2, 3])).conversation_id
    await update_cursors(groups, (group, 3, 9, 9))
    reply = await groups.UpdateCursors(
        group_pb2.UpdateCursorsRequest(
            updates=[
                confirm(group, 2, 4),
                confirm(group, 3, 5),  # behind the stored 9
                confirm(group, 99, 4),  # a stranger
                group_pb2.CursorUpdate(conversation_id=group, user_id=1, read_seq=4),  # not asked
            ]
        )
    )
    assert [(r.conversation_id, r.user_id, r.read_seq) for r in reply.stored_reads] == [
        (group, 2, 4)
    ]
    # The same read again moves nothing but is still what is stored (the gateway
    # writes REST reads itself before the router sees them).
    again = await groups.UpdateCursors(
        group_pb2.UpdateCursorsRequest(updates=[confirm(group, 2, 4)])
    )
    assert again.applied == 0
    assert [(r.user_id, r.read_seq) for r in again.stored_reads] == [(2, 4)]


async def test_check_members_answers_for_many_conversations(groups: Stub) -> None:
    a = (await create_group(groups, owner=1, members=[2])).conversation_id
    b = (await create_group(groups, owner=3)).conversation_id
    reply = await groups.CheckMembers(
        group_pb2.CheckMembersRequest(user_id=2, conversation_ids=[a, b, "g:404", "junk", a])
    )
    assert list(reply.member_of) == [a]
    many = [f"g:{i}" for i in range(1001)]
    too_many = await status_of(
        lambda: groups.CheckMembers(group_pb2.CheckMembersRequest(user_id=2, conversation_ids=many))
    )
    assert too_many == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_cursors_for_some_or_all_members(groups: Stub) -> None:
    group = (await create_group(groups, owner=1, members=[2, 3])).conversation_id
    await update_cursors(groups, (group, 3, 6, 5))

    some = await groups.GetCursors(
        group_pb2.GetCursorsRequest(conversation_id=group, user_ids=[3, 404, 1])
    )
    assert [(m.user_id, m.delivered_seq, m.read_seq) for m in some.members] == [
        (1, 0, 0),
        (3, 6, 5),
    ]
    every = await groups.GetCursors(group_pb2.GetCursorsRequest(conversation_id=group))
    assert [m.user_id for m in every.members] == [1, 2, 3]

    missing = await status_of(
        lambda: groups.GetCursors(group_pb2.GetCursorsRequest(conversation_id="g:77"))
    )
    assert missing == grpc.StatusCode.NOT_FOUND


async def test_readers_come_from_read_cursors(groups: Stub) -> None:
    conv = (await create_group(groups, owner=1, members=[2, 3, 4])).conversation_id
    await add(groups, conv, 1, [5], at_seq=10)  # joined after message 10
    await groups.UpdateCursors(
        group_pb2.UpdateCursorsRequest(
            updates=[
                group_pb2.CursorUpdate(conversation_id=conv, user_id=1, read_seq=12),  # the sender
                group_pb2.CursorUpdate(conversation_id=conv, user_id=2, read_seq=10),
                group_pb2.CursorUpdate(conversation_id=conv, user_id=3, read_seq=9),
            ]
        )
    )
    count = await groups.CountReaders(
        group_pb2.ReadersRequest(conversation_id=conv, seq=10, exclude_user_id=1)
    )
    assert (count.read_count, count.unread_count) == (1, 2)  # 2 read; 3 and 4 not; 5 n/a
    later = await groups.CountReaders(
        group_pb2.ReadersRequest(conversation_id=conv, seq=11, exclude_user_id=1)
    )
    assert (later.read_count, later.unread_count) == (0, 4)  # 5 counts from seq 11 on
    unread = await groups.ListReaders(
        group_pb2.ListReadersRequest(
            conversation_id=conv, seq=10, exclude_user_id=1, read=False, limit=1
        )
    )
    assert [m.user_id for m in unread.members] == [3] and unread.next_cursor == "3"
    rest = await groups.ListReaders(
        group_pb2.ListReadersRequest(
            conversation_id=conv, seq=10, exclude_user_id=1, read=False, limit=1, cursor="3"
        )
    )
    assert [m.user_id for m in rest.members] == [4] and rest.next_cursor == ""
    code = await status_of(
        lambda: groups.CountReaders(group_pb2.ReadersRequest(conversation_id=conv, seq=0))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
