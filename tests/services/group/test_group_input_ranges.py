"""The group service refuses ids, cursors and names no column can hold or no client
should show with INVALID_ARGUMENT, before they reach the database."""

from __future__ import annotations

import grpc
import pytest

from im.v1 import group_pb2
from tests.services.group.helpers import (
    ADMIN,
    Stub,
    add,
    create_group,
    status_of,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
TOO_BIG = str(2**70)


@pytest.mark.parametrize("cursor", [TOO_BIG, str(2**63), "-5", "0", " 7", "1e3", "\u0667"])
async def test_member_page_cursor_out_of_range_is_invalid(groups: Stub, cursor: str) -> None:
    conv = (await create_group(groups, owner=1, members=[2, 3])).conversation_id
    code = await status_of(
        lambda: groups.ListMembers(
            group_pb2.ListMembersRequest(conversation_id=conv, cursor=cursor, limit=2)
        )
    )
    assert code == INVALID
    # The largest cursor a column can hold is a valid, empty page.
    last = await groups.ListMembers(
        group_pb2.ListMembersRequest(conversation_id=conv, cursor=str(2**63 - 1), limit=2)
    )
    assert list(last.members) == [] and last.next_cursor == ""


async def test_reader_page_cursor_out_of_range_is_invalid(groups: Stub) -> None:
    conv = (await create_group(groups, owner=1, members=[2, 3])).conversation_id
    code = await status_of(
        lambda: groups.ListReaders(
            group_pb2.ListReadersRequest(conversation_id=conv, seq=1, cursor=TOO_BIG, read=False)
        )
    )
    assert code == INVALID


@pytest.mark.parametrize("actor, user", [(0, 2), (-1, 2), (1, 0), (1, -5)])
async def test_non_positive_ids_are_invalid(groups: Stub, actor: int, user: int) -> None:
    conv = (await create_group(groups, owner=1, members=[2])).conversation_id
    remove = group_pb2.RemoveMemberRequest(conversation_id=conv, actor_id=actor, user_id=user)
    assert await status_of(lambda: groups.RemoveMember(remove)) == INVALID
    role = group_pb2.SetMemberRoleRequest(
        conversation_id=conv, actor_id=actor, user_id=user, role=ADMIN
    )
    assert await status_of(lambda: groups.SetMemberRole(role)) == INVALID
    cursors = group_pb2.GetCursorsRequest(conversation_id=conv, user_ids=[min(actor, user)])
    assert await status_of(lambda: groups.GetCursors(cursors)) == INVALID
    # Nothing changed: both members are still there, the member still a member.
    members = await groups.ListMembers(group_pb2.ListMembersRequest(conversation_id=conv))
    assert [(m.user_id, m.role) for m in members.members] == [
        (1, group_pb2.MEMBER_ROLE_OWNER),
        (2, group_pb2.MEMBER_ROLE_MEMBER),
    ]


async def test_add_members_needs_a_real_actor_and_a_storable_seq(groups: Stub) -> None:
    conv = (await create_group(groups, owner=1)).conversation_id
    assert await status_of(lambda: add(groups, conv, 0, [5])) == INVALID
    assert await status_of(lambda: add(groups, conv, 1, [5], at_seq=2**63)) == INVALID
    assert [m.user_id for m in await add(groups, conv, 1, [5], at_seq=2**63 - 1)] == [5]


@pytest.mark.parametrize(
    "name", ["evil\x00name", "\x1b[31mred", "abc\u202eexe.txt", "a\u2066b", "x\u200fy", "a\nb"]
)
async def test_group_name_with_control_or_bidi_characters_is_invalid(
    groups: Stub, name: str
) -> None:
    assert await status_of(lambda: create_group(groups, owner=1, name=name)) == INVALID


async def test_group_name_with_emoji_joiners_is_kept(groups: Stub) -> None:
    family = "family \U0001f468\u200d\U0001f469\u200d\U0001f467"  # ZWJ sequence: allowed
    assert (await create_group(groups, owner=1, name=family)).name == family
