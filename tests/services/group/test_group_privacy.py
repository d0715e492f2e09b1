"""Blocking and privacy in the group service: blocked pairs cannot send to their 1:1
conversation, and users who blocked an actor or take invites from contacts only cannot
be added by them; refusals name no reason."""

from __future__ import annotations

import grpc
import pytest

from im.v1 import group_pb2
from tests.services.group.helpers import Stub


async def block(groups: Stub, user: int, target: int) -> group_pb2.BlockResponse:
    return await groups.Block(group_pb2.BlockRequest(user_id=user, target_id=target))


async def check(groups: Stub, conversation_id: str, user: int) -> group_pb2.CheckMemberResponse:
    return await groups.CheckMember(
        group_pb2.CheckMemberRequest(conversation_id=conversation_id, user_id=user)
    )


async def test_a_block_stops_the_pairs_sends_both_ways_and_unblock_restores_them(groups: Stub):
    await groups.GetOrCreateDirect(group_pb2.GetOrCreateDirectRequest(user_a=1, user_b=2))
    first = await block(groups, 1, 2)
    assert first.changed and first.conversation_id == "d:1:2"
    assert not (await block(groups, 1, 2)).changed  # idempotent
    for user in (1, 2):
        answer = await check(groups, "d:1:2", user)
        assert answer.is_member and answer.send_blocked  # history stays readable
    other = await groups.GetOrCreateDirect(group_pb2.GetOrCreateDirectRequest(user_a=1, user_b=3))
    assert not (await check(groups, other.conversation.conversation_id, 1)).send_blocked

    assert (await groups.Unblock(group_pb2.BlockRequest(user_id=1, target_id=2))).changed
    assert not (await check(groups, "d:1:2", 2)).send_blocked


async def test_list_blocks_shows_both_directions(groups: Stub):
    await block(groups, 1, 2)
    await block(groups, 3, 1)
    blocks = await groups.ListBlocks(group_pb2.ListBlocksRequest(user_id=1))
    assert list(blocks.blocked_ids) == [2] and list(blocks.blocked_by_ids) == [3]


@pytest.mark.parametrize("pair", [(1, 1), (0, 2), (1, -5)])
async def test_block_refuses_bad_pairs(groups: Stub, pair: tuple[int, int]):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await block(groups, *pair)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_whoever_blocked_the_actor_cannot_be_added_or_put_in_a_new_group(groups: Stub):
    await block(groups, 2, 1)  # 2 blocked 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await groups.CreateGroup(group_pb2.CreateGroupRequest(owner_id=1, name="g", member_ids=[2]))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "block" not in err.value.details()  # neutral: the block is not revealed
    group = await groups.CreateGroup(
        group_pb2.CreateGroupRequest(owner_id=1, name="g", member_ids=[3])
    )
    cid = group.conversation.conversation_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await groups.AddMembers(
            group_pb2.AddMembersRequest(conversation_id=cid, actor_id=1, user_ids=[4, 2])
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    members = await groups.ListMemberIds(group_pb2.ListMemberIdsRequest(conversation_id=cid))
    assert sorted(members.user_ids) == [1, 3]  # nothing added: the request is refused whole
    # The blocker may still add the one it blocked (the block keeps 1 from inviting 2).
    await groups.AddMembers(
        group_pb2.AddMembersRequest(conversation_id=cid, actor_id=1, user_ids=[4])
    )


async def test_contacts_only_takes_invites_from_read_1to1_peers(groups: Stub):
    settings = await groups.SetPrivacy(
        group_pb2.PrivacySettings(user_id=2, invites_from_contacts_only=True)
    )
    assert settings.invites_from_contacts_only
    assert (
        await groups.GetPrivacy(group_pb2.GetPrivacyRequest(user_id=2))
    ).invites_from_contacts_only
    assert not (
        await groups.GetPrivacy(group_pb2.GetPrivacyRequest(user_id=9))
    ).invites_from_contacts_only

    def create() -> object:
        return groups.CreateGroup(
            group_pb2.CreateGroupRequest(owner_id=1, name="g", member_ids=[2])
        )

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create()  # a stranger
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # 1 writes to 2 first: the conversation exists, but 2 has read nothing of it yet.
    await groups.GetOrCreateDirect(group_pb2.GetOrCreateDirectRequest(user_a=1, user_b=2))
    with pytest.raises(grpc.aio.AioRpcError):
        await create()
    await groups.UpdateCursors(
        group_pb2.UpdateCursorsRequest(
            updates=[
                group_pb2.CursorUpdate(
                    conversation_id="d:1:2", user_id=2, read_seq=1, delivered_seq=1
                )
            ]
        )
    )
    await create()  # now a contact
