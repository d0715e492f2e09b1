"""Groups at the gateway: create one, look it up, add, remove and leave members, list
them and set their roles. The group service decides under its lock; the gateway checks
that added users exist, picks the point new members see messages from, and announces
membership changes on the bus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from im import events
from im.config import Settings
from im.ids import GROUP_PREFIX, is_valid_conversation_id
from im.v1 import bus_pb2, group_pb2, group_pb2_grpc, user_pb2
from services.gateway.calls import Calls
from services.gateway.conversations import ConversationOps
from services.gateway.errors import ApiError, forbidden, no_such_group
from services.gateway.group_events import GroupEvents

USER_LOOKUP_CHUNK = 1000  # the user service's MAX_USERS_PER_LOOKUP
UNKNOWN_IDS_IN_DETAIL = 20  # the problem's user_ids member carries them all

ROLE_NAMES = {
    group_pb2.MEMBER_ROLE_OWNER: "owner",
    group_pb2.MEMBER_ROLE_ADMIN: "admin",
    group_pb2.MEMBER_ROLE_MEMBER: "member",
}
ROLES_BY_NAME = {name: role for role, name in ROLE_NAMES.items()}
MANAGER_ROLES = (group_pb2.MEMBER_ROLE_OWNER, group_pb2.MEMBER_ROLE_ADMIN)

# Per-call meanings of FAILED_PRECONDITION, the group service's one ambiguous status.
# Its other cause, a direct conversation, cannot reach these calls: group routes only
# accept "g:" ids (group_id_from_path).
_GROUP_FULL = {grpc.StatusCode.FAILED_PRECONDITION: (409, "group_full")}
_OWNER_CANNOT_LEAVE = {grpc.StatusCode.FAILED_PRECONDITION: (409, "owner_cannot_leave")}
_OWNER_ROLE_FIXED = {grpc.StatusCode.FAILED_PRECONDITION: (409, "owner_role_fixed")}


def role_name(role: int) -> str:
    return ROLE_NAMES.get(role, "member")


def group_id_from_path(raw: str) -> str:
    """The conversation id of a group given as ``g:<digits>`` or just ``<digits>``."""
    candidate = raw if raw.startswith(GROUP_PREFIX) else GROUP_PREFIX + raw
    if not is_valid_conversation_id(candidate):
        # Anything else (a direct id, garbage) names no group.
        raise no_such_group()
    return candidate


@dataclass(frozen=True, slots=True)
class GroupView:
    conversation: group_pb2.Conversation
    my_role: str


class GroupOps:
    """The group operations of ``Gateway`` (``gateway.group_ops``); ``me`` is always
    the calling user, ``group_id`` a group's conversation id."""

    def __init__(
        self,
        settings: Settings,
        groups: Callable[[], group_pb2_grpc.GroupServiceStub],
        conversations: ConversationOps,
        calls: Calls,
        get_users: Callable[[list[int]], Awaitable[list[user_pb2.User]]],
        events: GroupEvents | None = None,
    ) -> None:
        self._settings = settings
        self._events = events
        self._groups = groups
        self._conversations = conversations
        self._calls = calls
        self._get_users = get_users

    async def _missing_users(self, user_ids: list[int]) -> list[int]:
        """Those of ``user_ids`` that do not exist, in request order. The user service
        answers at most USER_LOOKUP_CHUNK ids per call; the chunks go in parallel."""
        chunks = [
            user_ids[start : start + USER_LOOKUP_CHUNK]
            for start in range(0, len(user_ids), USER_LOOKUP_CHUNK)
        ]
        answers = await asyncio.gather(*(self._get_users(chunk) for chunk in chunks))
        found = {u.user_id for users in answers for u in users}
        return [uid for uid in user_ids if uid not in found]

    async def _require_users(self, user_ids: list[int]) -> None:
        # The group service stores any positive id: without this check a typo would
        # become a member nobody can ever be.
        missing = await self._missing_users(user_ids)
        if not missing:
            return
        shown = ", ".join(str(uid) for uid in missing[:UNKNOWN_IDS_IN_DETAIL])
        more = len(missing) - UNKNOWN_IDS_IN_DETAIL
        detail = f"no such user: {shown}" + (f" and {more} more" if more > 0 else "")
        raise ApiError(422, "unknown_users", detail, extra={"user_ids": missing})

    async def _group(self, group_id: str) -> group_pb2.Conversation:
        """The group, or 404 (unknown id, or a conversation that is not a group)."""
        request = group_pb2.GetConversationRequest(conversation_id=group_id)
        try:
            conversation = (
                await self._calls.rpc(self._groups().GetConversation, request)
            ).conversation
        except ApiError as exc:
            if exc.status in (404, 422):
                raise no_such_group() from exc
            raise
        if conversation.kind != group_pb2.CONVERSATION_KIND_GROUP:
            raise no_such_group()
        return conversation

    async def _group_member(self, group_id: str, user_id: int) -> group_pb2.Member:
        """The caller's membership: 404 for an unknown group, 403 for a non-member."""
        member = await self._conversations.member(group_id, user_id)
        if member is None:
            await self._group(group_id)  # raises 404 when there is no such group
            raise forbidden("not a member of this group")
        return member

    async def create_group(
        self, me: int, name: str, member_ids: list[int], history_visible: bool
    ) -> GroupView:
        others = [uid for uid in dict.fromkeys(member_ids) if uid != me]
        await self._require_users(others)
        request = group_pb2.CreateGroupRequest(
            owner_id=me, name=name, member_ids=others, history_visible=history_visible
        )
        response = await self._calls.rpc(self._groups().CreateGroup, request, _GROUP_FULL)
        conversation = response.conversation
        # Nobody can have cached a brand-new id, but connectors may hold a negative
        # "not a member" for it from an early send: the event clears that too.
        await self._publish_membership(conversation.conversation_id, [me, *others], [], 0)
        return GroupView(conversation, "owner")

    async def get_group(self, me: int, group_id: str) -> GroupView:
        conversation, member = await asyncio.gather(
            self._group(group_id), self._conversations.member(group_id, me)
        )
        if member is None:
            raise forbidden("not a member of this group")
        return GroupView(conversation, role_name(member.role))

    async def add_members(self, me: int, group_id: str, user_ids: list[int]) -> list[int]:
        """Adds the users not yet in the group; returns those added."""
        conversation, actor = await asyncio.gather(
            self._group(group_id), self._conversations.member(group_id, me)
        )
        # Checked here too (the group service decides, under its lock) so that a plain
        # member cannot make us look up thousands of users for nothing.
        if actor is None:
            raise forbidden("not a member of this group")
        if actor.role not in MANAGER_ROLES:
            raise forbidden("only the owner or an admin may add members")
        wanted = list(dict.fromkeys(user_ids))
        await self._require_users(wanted)
        # New members see what is sent after they joined, unless the group shows its
        # history. A message numbered between this read and the insert is seen too:
        # the join point can only be early, never late, so nothing after it is missed.
        at_seq = 0
        if not conversation.history_visible:
            at_seq = (await self._conversations.last_seqs([group_id])).get(group_id, 0)
        request = group_pb2.AddMembersRequest(
            conversation_id=group_id, actor_id=me, user_ids=wanted, at_seq=at_seq
        )
        response = await self._calls.rpc(self._groups().AddMembers, request, _GROUP_FULL)
        added = [m.user_id for m in response.members]
        if added:
            await self._publish_membership(group_id, added, [], at_seq)
            await self._emit(
                group_id, me, events.GROUP_MEMBERS_ADDED, response.change_version, user_ids=added
            )
        return added

    async def remove_member(self, me: int, group_id: str, user_id: int) -> None:
        if user_id == me:
            await self.leave_group(me, group_id)
            return
        # The group service checks the actor's role and the target under its lock:
        # PERMISSION_DENIED (not owner/admin, or an admin removing an admin) -> 403,
        # NOT_FOUND (no such group or target) -> 404, the owner -> 409.
        request = group_pb2.RemoveMemberRequest(
            conversation_id=group_id, actor_id=me, user_id=user_id
        )
        response = await self._calls.rpc(self._groups().RemoveMember, request, _OWNER_CANNOT_LEAVE)
        await self._publish_membership(group_id, [], [user_id], 0)
        await self._emit(
            group_id, me, events.GROUP_MEMBER_REMOVED, response.change_version, user_ids=[user_id]
        )

    async def leave_group(self, me: int, group_id: str) -> None:
        # Looked up first: RemoveMember answers NOT_FOUND both for an unknown group
        # and for a non-member, which must be 404 and 403 here.
        await self._group_member(group_id, me)
        request = group_pb2.RemoveMemberRequest(conversation_id=group_id, actor_id=me, user_id=me)
        response = await self._calls.rpc(self._groups().RemoveMember, request, _OWNER_CANNOT_LEAVE)
        await self._publish_membership(group_id, [], [me], 0)
        if not (await self._group(group_id)).dissolved:  # a dissolved group gets no events
            await self._emit(
                group_id, me, events.GROUP_MEMBER_LEFT, response.change_version, user_ids=[me]
            )

    async def list_members(
        self, me: int, group_id: str, cursor: str, limit: int
    ) -> tuple[list[group_pb2.Member], str | None]:
        await self._group_member(group_id, me)
        request = group_pb2.ListMembersRequest(conversation_id=group_id, cursor=cursor, limit=limit)
        response = await self._calls.rpc(self._groups().ListMembers, request)
        return list(response.members), response.next_cursor or None

    async def set_role(self, me: int, group_id: str, user_id: int, role: str) -> group_pb2.Member:
        request = group_pb2.SetMemberRoleRequest(
            conversation_id=group_id, actor_id=me, user_id=user_id, role=ROLES_BY_NAME[role]
        )
        response = await self._calls.rpc(self._groups().SetMemberRole, request, _OWNER_ROLE_FIXED)
        await self._emit(
            group_id,
            me,
            events.GROUP_ROLE_CHANGED,
            response.change_version,
            user_ids=[user_id],
            role=role,
        )
        return response.members[0]

    async def _emit(
        self, group_id: str, sender_id: int, content_type: str, version: int, **fields: object
    ) -> None:
        if self._events is not None:
            await self._events.emit(group_id, sender_id, content_type, version, **fields)

    async def _publish_membership(
        self, conversation_id: str, added: list[int], removed: list[int], at_seq: int
    ) -> None:
        event = bus_pb2.MembershipEvent(
            conversation_id=conversation_id, added=added, removed=removed, at_seq=at_seq
        )
        await self._calls.publish(self._settings.topic_membership, conversation_id, event)
