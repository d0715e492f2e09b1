"""The group lifecycle at the gateway: rename, describe, set the avatar, transfer
ownership, dissolve; invite links, joining by link, join requests. The group service
decides under its lock; the gateway picks the seq new members see messages after,
tells connectors and routers on the bus, and sends each change as a system event
(``group_events.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc

from im import events
from im.v1 import group_pb2, group_pb2_grpc
from services.gateway.calls import Calls
from services.gateway.conversations import ConversationOps
from services.gateway.errors import ApiError, forbidden
from services.gateway.groups import MANAGER_ROLES, GroupOps, GroupView, role_name

# FAILED_PRECONDITION of these calls: the group is dissolved (or, for a join, the
# link expired or was used up, or the group is full: the message says which).
_DISSOLVED = {grpc.StatusCode.FAILED_PRECONDITION: (409, "group_dissolved")}
_LINK_UNUSABLE = {
    grpc.StatusCode.FAILED_PRECONDITION: (410, "invite_unusable"),
    grpc.StatusCode.NOT_FOUND: (404, "invite_not_found"),
}
_INFO_EVENTS = {
    "name": events.GROUP_RENAMED,
    "description": events.GROUP_DESCRIPTION_CHANGED,
    "avatar": events.GROUP_AVATAR_CHANGED,
}


@dataclass(frozen=True, slots=True)
class JoinResult:
    conversation: group_pb2.Conversation
    status: str  # "joined", "already_member" or "pending"


class GroupLifecycleOps:
    """``gateway.lifecycle_ops``; ``me`` is always the calling user."""

    def __init__(
        self,
        groups: Callable[[], group_pb2_grpc.GroupServiceStub],
        group_ops: GroupOps,
        conversations: ConversationOps,
        calls: Calls,
    ) -> None:
        self._groups = groups
        self._ops = group_ops
        self._conversations = conversations
        self._calls = calls

    async def _manager(self, group_id: str, me: int) -> group_pb2.Member:
        """404 unknown group, 403 non-member or plain member. The group service checks
        again under its lock; this gives the precise answer without a write."""
        member = await self._ops._group_member(group_id, me)
        if member.role not in MANAGER_ROLES:
            raise forbidden("only the owner or an admin may do this")
        return member

    async def _join_point(self, conversation: group_pb2.Conversation) -> int:
        """The seq a new member sees messages after (as ``GroupOps.add_members``)."""
        if conversation.history_visible:
            return 0
        cid = conversation.conversation_id
        return (await self._conversations.last_seqs([cid])).get(cid, 0)

    # --- info, ownership, dissolution ------------------------------------------
    async def update_info(self, me: int, group_id: str, changes: dict[str, str]) -> GroupView:
        member = await self._ops._group_member(group_id, me)
        request = group_pb2.UpdateGroupInfoRequest(conversation_id=group_id, actor_id=me)
        for key, value in changes.items():
            setattr(request, f"set_{key}", True)
            setattr(request, key, value)
        response = await self._calls.rpc(self._groups().UpdateGroupInfo, request, _DISSOLVED)
        conversation = response.conversation
        if response.changed:
            # One event per field asked for, all of this one change: told apart by
            # ``part`` in their client_msg_ids.
            for key in ("name", "description", "avatar"):
                if key in changes:
                    await self._ops._emit(
                        group_id,
                        me,
                        _INFO_EVENTS[key],
                        conversation.change_version,
                        part=key,
                        **{key: getattr(conversation, key)},
                    )
        return GroupView(conversation, role_name(member.role))

    async def transfer(self, me: int, group_id: str, new_owner_id: int) -> GroupView:
        await self._ops._group_member(group_id, me)
        request = group_pb2.TransferOwnershipRequest(
            conversation_id=group_id, actor_id=me, new_owner_id=new_owner_id
        )
        overrides = {grpc.StatusCode.FAILED_PRECONDITION: (409, "invalid_transfer")}
        response = await self._calls.rpc(self._groups().TransferOwnership, request, overrides)
        await self._ops._emit(
            group_id,
            me,
            events.GROUP_OWNER_TRANSFERRED,
            response.change_version,
            user_ids=[new_owner_id],
        )
        return GroupView(await self._ops._group(group_id), "admin")

    async def dissolve(self, me: int, group_id: str) -> GroupView:
        member = await self._ops._group_member(group_id, me)
        request = group_pb2.DissolveGroupRequest(conversation_id=group_id, actor_id=me)
        response = await self._calls.rpc(self._groups().DissolveGroup, request)
        conversation = response.conversation
        if response.changed:
            # No one added or removed: connectors forget every cached permission of
            # the group and ask again, learning that it is read-only. Told before the
            # event is sent: a member who sees the event finds sends refused.
            await self._ops._publish_membership(group_id, [], [], 0)
            await self._ops._emit(group_id, me, events.GROUP_DISSOLVED, conversation.change_version)
        return GroupView(conversation, role_name(member.role))

    # --- invite links ------------------------------------------------------------
    async def create_link(
        self, me: int, group_id: str, expires_at: int, max_uses: int, approval_required: bool
    ) -> group_pb2.InviteLink:
        await self._manager(group_id, me)
        request = group_pb2.CreateInviteLinkRequest(
            conversation_id=group_id,
            actor_id=me,
            expires_at=expires_at,
            max_uses=max_uses,
            approval_required=approval_required,
        )
        overrides = {
            grpc.StatusCode.FAILED_PRECONDITION: (409, "group_dissolved_or_too_many_links")
        }
        return (await self._calls.rpc(self._groups().CreateInviteLink, request, overrides)).link

    async def list_links(self, me: int, group_id: str) -> list[group_pb2.InviteLink]:
        await self._manager(group_id, me)
        request = group_pb2.ListInviteLinksRequest(conversation_id=group_id, actor_id=me)
        return list((await self._calls.rpc(self._groups().ListInviteLinks, request)).links)

    async def revoke_link(self, me: int, group_id: str, link_id: str) -> group_pb2.InviteLink:
        await self._manager(group_id, me)
        request = group_pb2.RevokeInviteLinkRequest(
            conversation_id=group_id, actor_id=me, link_id=link_id
        )
        return (await self._calls.rpc(self._groups().RevokeInviteLink, request)).link

    # --- joining -------------------------------------------------------------------
    async def join(self, me: int, token: str) -> JoinResult:
        # First a look (no change) for the group, to pick the join point before the
        # insert: early is safe, late would hide messages sent in between.
        peek = group_pb2.JoinByLinkRequest(token=token, user_id=me, dry_run=True)
        found = await self._calls.rpc(self._groups().JoinByLink, peek, _LINK_UNUSABLE)
        if found.already_member:
            return JoinResult(found.conversation, "already_member")
        at_seq = await self._join_point(found.conversation)
        request = group_pb2.JoinByLinkRequest(token=token, user_id=me, at_seq=at_seq)
        response = await self._calls.rpc(self._groups().JoinByLink, request, _LINK_UNUSABLE)
        group_id = response.conversation.conversation_id
        if response.pending:
            return JoinResult(response.conversation, "pending")
        if response.already_member:
            return JoinResult(response.conversation, "already_member")
        await self._ops._publish_membership(group_id, [me], [], at_seq)
        await self._ops._emit(
            group_id, me, events.GROUP_MEMBER_JOINED, response.change_version, user_ids=[me]
        )
        return JoinResult(response.conversation, "joined")

    async def list_requests(self, me: int, group_id: str) -> list[group_pb2.JoinRequest]:
        await self._manager(group_id, me)
        request = group_pb2.ListJoinRequestsRequest(conversation_id=group_id, actor_id=me)
        return list((await self._calls.rpc(self._groups().ListJoinRequests, request)).requests)

    async def decide(self, me: int, group_id: str, user_id: int, approve: bool) -> bool:
        """Approves or rejects; True when the user joined."""
        await self._manager(group_id, me)
        at_seq = await self._join_point(await self._ops._group(group_id)) if approve else 0
        request = group_pb2.DecideJoinRequestRequest(
            conversation_id=group_id, actor_id=me, user_id=user_id, approve=approve, at_seq=at_seq
        )
        overrides = {grpc.StatusCode.FAILED_PRECONDITION: (409, "cannot_join")}
        response = await self._calls.rpc(self._groups().DecideJoinRequest, request, overrides)
        if not response.members:
            return False
        await self._ops._publish_membership(group_id, [user_id], [], at_seq)
        await self._ops._emit(
            group_id,
            me,
            events.GROUP_MEMBER_JOINED,
            response.change_version,
            user_ids=[user_id],
            approved_by=me,
        )
        return True


def require_token(token: str) -> str:
    if not 0 < len(token) <= 128:
        raise ApiError(422, "invalid_request", "token must be 1 to 128 characters")
    return token
