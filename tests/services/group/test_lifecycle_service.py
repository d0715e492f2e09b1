"""The group lifecycle's RPCs over gRPC: what they refuse before any row is touched,
and the dissolved flag on the send check."""

from __future__ import annotations

import grpc
import pytest

from im.v1 import group_pb2
from services.group.lifecycle_service import check_avatar, check_description
from tests.services.group.helpers import Stub, create_group, status_of

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def info(cid: str, actor: int = 1, **fields: str) -> group_pb2.UpdateGroupInfoRequest:
    request = group_pb2.UpdateGroupInfoRequest(conversation_id=cid, actor_id=actor)
    for key, value in fields.items():
        setattr(request, f"set_{key}", True)
        setattr(request, key, value)
    return request


@pytest.mark.parametrize(
    "avatar",
    [
        "http://example.com/a.png",
        "javascript:alert(1)",
        "https:///nohost",
        "https://example.com/a b.png",
        "ftp://example.com/a.png",
        "https://example.com/" + "a" * 600,
        "data:image/png;base64,AAAA",
    ],
)
def test_avatar_must_be_an_https_url_or_an_attachment_id(avatar: str) -> None:
    with pytest.raises(Exception, match="avatar"):
        check_avatar(avatar)


def test_accepted_avatars_and_descriptions() -> None:
    assert check_avatar("https://cdn.example.com/g/1.png") == "https://cdn.example.com/g/1.png"
    assert check_avatar("att_01HZX-9") == "att_01HZX-9"
    assert check_avatar("  ") == ""  # removes it
    assert check_description(" two\r\nlines ") == "two\nlines"
    with pytest.raises(Exception, match="control"):
        check_description("bell\x07")
    with pytest.raises(Exception, match="at most"):
        check_description("x" * 1001)


async def test_bad_requests_are_invalid_arguments(groups: Stub) -> None:
    cid = (await create_group(groups, owner=1, members=[2])).conversation_id
    bad = [
        lambda: groups.UpdateGroupInfo(info(cid)),  # nothing to change
        lambda: groups.UpdateGroupInfo(info(cid, name="  ")),
        lambda: groups.UpdateGroupInfo(info(cid, name="a\u202eb")),
        lambda: groups.UpdateGroupInfo(info("d:1:2", name="x")),
        lambda: groups.UpdateGroupInfo(info(cid, actor=0, name="x")),
        lambda: groups.TransferOwnership(
            group_pb2.TransferOwnershipRequest(conversation_id=cid, actor_id=1, new_owner_id=-3)
        ),
        lambda: groups.CreateInviteLink(
            group_pb2.CreateInviteLinkRequest(conversation_id=cid, actor_id=1, expires_at=0)
        ),
        lambda: groups.CreateInviteLink(
            group_pb2.CreateInviteLinkRequest(
                conversation_id=cid, actor_id=1, expires_at=1 << 62, max_uses=10**7
            )
        ),
        lambda: groups.RevokeInviteLink(
            group_pb2.RevokeInviteLinkRequest(conversation_id=cid, actor_id=1, link_id="../x")
        ),
        lambda: groups.JoinByLink(group_pb2.JoinByLinkRequest(token="", user_id=5)),
        lambda: groups.JoinByLink(group_pb2.JoinByLinkRequest(token="t" * 129, user_id=5)),
        lambda: groups.JoinByLink(
            group_pb2.JoinByLinkRequest(token="abc", user_id=5, at_seq=1 << 63)
        ),
    ]
    for call in bad:
        assert await status_of(call) == INVALID


async def test_check_member_says_a_dissolved_group_is_read_only(groups: Stub) -> None:
    cid = (await create_group(groups, owner=1, members=[2])).conversation_id
    check = group_pb2.CheckMemberRequest(conversation_id=cid, user_id=2)
    assert not (await groups.CheckMember(check)).read_only
    reply = await groups.DissolveGroup(
        group_pb2.DissolveGroupRequest(conversation_id=cid, actor_id=1)
    )
    assert reply.changed and reply.conversation.dissolved
    answer = await groups.CheckMember(check)
    assert answer.is_member and answer.read_only
    got = await groups.GetConversation(group_pb2.GetConversationRequest(conversation_id=cid))
    assert got.conversation.dissolved


async def test_a_full_lifecycle_over_grpc(groups: Stub) -> None:
    cid = (await create_group(groups, owner=1, members=[2])).conversation_id
    renamed = await groups.UpdateGroupInfo(info(cid, name="crew", avatar="att_1"))
    assert renamed.changed and renamed.conversation.name == "crew"
    link = (
        await groups.CreateInviteLink(
            group_pb2.CreateInviteLinkRequest(conversation_id=cid, actor_id=1, expires_at=1 << 62)
        )
    ).link
    joined = await groups.JoinByLink(group_pb2.JoinByLinkRequest(token=link.token, user_id=3))
    assert joined.member.user_id == 3
    moved = await groups.TransferOwnership(
        group_pb2.TransferOwnershipRequest(conversation_id=cid, actor_id=1, new_owner_id=3)
    )
    assert [m.user_id for m in moved.members] == [3, 1]
    assert moved.change_version > joined.change_version > renamed.conversation.change_version
