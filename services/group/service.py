"""Group service: every conversation (1:1 pairs and groups), its members and their
per-member cursors (im.v1.GroupService). Requests are checked here; the rows live in
``store.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import grpc
from sqlalchemy.engine import Engine

from im.clock import Clock, SystemClock
from im.config import Settings
from im.ids import (
    GROUP_PREFIX,
    MsgIdGenerator,
    direct_conversation_id,
    is_valid_conversation_id,
    parse_direct,
)
from im.sqlservice import rpc_errors
from im.v1 import group_pb2, group_pb2_grpc
from im.validation import InvalidInput, is_id, parse_id_text, require_clean_name
from services.group.lifecycle import LifecycleStore
from services.group.lifecycle_service import LifecycleRpcs
from services.group.privacy import PrivacyStore
from services.group.settings import SettingsRpcs
from services.group.settings_store import SettingsStore
from services.group.store import MAX_NAME_CHARS, MAX_SQL_INT, GroupStore, invalid

log = logging.getLogger("im.group")
_rpc = rpc_errors("group")

# ---------------------------------------------------------------------- servicer


def _require_conversation_id(conversation_id: str) -> None:
    if not conversation_id:
        raise invalid("conversation_id is required")
    if not is_valid_conversation_id(conversation_id):
        raise invalid(f"malformed conversation_id {conversation_id!r}")


def _require_user_ids(user_ids: Iterable[int], what: str) -> list[int]:
    ids = list(user_ids)
    if not all(is_id(uid) for uid in ids):
        raise invalid(f"{what} must be positive user ids")
    return ids


def _require_user_id(user_id: int, what: str) -> int:
    if not is_id(user_id):
        raise invalid(f"{what} must be a positive user id")
    return user_id


def _page_after(cursor: str) -> int | None:
    """The user id a page cursor (a previous page's last member) names; None: from the
    start. A cursor no column can hold is refused before it reaches the database."""
    if not cursor:
        return None
    try:
        return parse_id_text(cursor, "cursor")
    except InvalidInput:
        raise invalid(f"malformed cursor {cursor[:40]!r}") from None


def _require_group_name(raw: str) -> str:
    name = raw.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise invalid(f"group name must be 1 to {MAX_NAME_CHARS} characters")
    try:
        return require_clean_name(name, "group name")
    except InvalidInput as exc:
        raise invalid(str(exc)) from None


def _require_seq(value: int, what: str) -> int:
    if value > MAX_SQL_INT:
        raise invalid(f"{what} is out of range")
    return value


def coalesce_cursor_updates(
    updates: Iterable[group_pb2.CursorUpdate],
) -> tuple[dict[tuple[str, int], tuple[int, int]], set[tuple[str, int]]]:
    """One (delivered, read) target per member: the highest of each asked for, and
    delivered raised to read (having read a message implies having received it); and
    the members whose read is to be confirmed.

    Entries that can match no member or hold a seq no column can store are skipped,
    not refused: one bad entry must not fail the batch it came in."""
    targets: dict[tuple[str, int], tuple[int, int]] = {}
    confirm: set[tuple[str, int]] = set()
    skipped = 0
    for u in updates:
        if (
            u.user_id <= 0
            or not is_valid_conversation_id(u.conversation_id)
            or u.delivered_seq > MAX_SQL_INT
            or u.read_seq > MAX_SQL_INT
        ):
            skipped += 1
            continue
        key = (u.conversation_id, u.user_id)
        delivered, read = targets.get(key, (0, 0))
        read = max(read, u.read_seq)
        delivered = max(delivered, u.delivered_seq, read)
        targets[key] = (delivered, read)
        if u.confirm_read:
            confirm.add(key)
    if skipped:
        log.warning("skipped %d cursor updates that can match no member or seq", skipped)
    return {key: value for key, value in targets.items() if value[0] > 0}, confirm


MAX_MEMBERSHIP_CHECKS = 1000


class GroupServicer(LifecycleRpcs, SettingsRpcs, group_pb2_grpc.GroupServiceServicer):
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        clock: Clock | None = None,
        ids: MsgIdGenerator | None = None,
    ) -> None:
        """``ids`` mints group ids; its node id should come from a registry lease
        (the app does that). Without one, node 0: fine for a single test process."""
        clock = clock or SystemClock()
        self._privacy = PrivacyStore(engine, clock)
        self._store = GroupStore(
            engine,
            max_group_size=settings.max_group_size,
            ids=ids or MsgIdGenerator(0, clock),
            clock=clock,
        )
        self._lifecycle = LifecycleStore(engine, settings.max_group_size, clock)
        self._clock = clock
        self._settings = SettingsStore(engine, clock)

    @_rpc
    async def GetOrCreateDirect(
        self, request: group_pb2.GetOrCreateDirectRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ConversationResponse:
        if request.user_a <= 0 or request.user_b <= 0:
            raise invalid("user_a and user_b must be positive user ids")
        if request.user_a == request.user_b:
            raise invalid("a direct conversation needs two different users")
        conversation = await asyncio.to_thread(
            self._store.get_or_create_direct, request.user_a, request.user_b
        )
        return group_pb2.ConversationResponse(conversation=conversation)

    @_rpc
    async def CreateGroup(
        self, request: group_pb2.CreateGroupRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ConversationResponse:
        if request.owner_id <= 0:
            raise invalid("owner_id must be a positive user id")
        name = _require_group_name(request.name)
        member_ids = _require_user_ids(request.member_ids, "member_ids")
        conversation = await asyncio.to_thread(
            self._store.create_group, request.owner_id, name, member_ids, request.history_visible
        )
        log.info("group %s created by %d", conversation.conversation_id, request.owner_id)
        return group_pb2.ConversationResponse(conversation=conversation)

    @_rpc
    async def GetConversation(
        self, request: group_pb2.GetConversationRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ConversationResponse:
        _require_conversation_id(request.conversation_id)
        conversation = await asyncio.to_thread(
            self._store.get_conversation, request.conversation_id
        )
        return group_pb2.ConversationResponse(conversation=conversation)

    @_rpc
    async def AddMembers(
        self, request: group_pb2.AddMembersRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.MembersResponse:
        _require_conversation_id(request.conversation_id)
        _require_user_id(request.actor_id, "actor_id")
        user_ids = _require_user_ids(request.user_ids, "user_ids")
        at_seq = _require_seq(request.at_seq, "at_seq")
        added, version = await asyncio.to_thread(
            self._store.add_members, request.conversation_id, request.actor_id, user_ids, at_seq
        )
        return group_pb2.MembersResponse(members=added, change_version=version)

    @_rpc
    async def RemoveMember(
        self, request: group_pb2.RemoveMemberRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.MembersResponse:
        _require_conversation_id(request.conversation_id)
        _require_user_id(request.actor_id, "actor_id")
        _require_user_id(request.user_id, "user_id")
        removed, version = await asyncio.to_thread(
            self._store.remove_member,
            request.conversation_id,
            request.actor_id,
            request.user_id,
        )
        await asyncio.to_thread(self._settings.forget, request.conversation_id, request.user_id)
        return group_pb2.MembersResponse(members=[removed], change_version=version)

    @_rpc
    async def ListMembers(
        self, request: group_pb2.ListMembersRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.MembersResponse:
        _require_conversation_id(request.conversation_id)
        after = _page_after(request.cursor)
        members, next_cursor = await asyncio.to_thread(
            self._store.list_members, request.conversation_id, after, request.limit
        )
        return group_pb2.MembersResponse(members=members, next_cursor=next_cursor)

    @_rpc
    async def ListMemberIds(
        self, request: group_pb2.ListMemberIdsRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ListMemberIdsResponse:
        _require_conversation_id(request.conversation_id)
        return await asyncio.to_thread(
            self._store.list_member_ids, request.conversation_id, request.known_version
        )

    @_rpc
    async def ListUserConversations(
        self, request: group_pb2.ListUserConversationsRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ListUserConversationsResponse:
        if request.user_id <= 0:
            raise invalid("user_id must be a positive user id")
        conversations = await asyncio.to_thread(
            self._store.list_user_conversations, request.user_id
        )
        conversations = await self.with_settings(request.user_id, conversations)
        return group_pb2.ListUserConversationsResponse(conversations=conversations)

    @_rpc
    async def CheckMember(
        self, request: group_pb2.CheckMemberRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.CheckMemberResponse:
        # Anything that is not a membership, a malformed id included, is simply "no":
        # callers ask this on every send and need a yes/no, not an error.
        if request.user_id <= 0 or not is_valid_conversation_id(request.conversation_id):
            return group_pb2.CheckMemberResponse(is_member=False)
        member = await asyncio.to_thread(
            self._store.check_member, request.conversation_id, request.user_id
        )
        if member is None:
            return group_pb2.CheckMemberResponse(is_member=False)
        # A 1:1 may be blocked, a group dissolved: one more query, on the cache misses of
        # the send path only.
        blocked = read_only = False
        if parse_direct(request.conversation_id) is not None:
            blocked = await asyncio.to_thread(self._privacy.send_blocked, request.conversation_id)
        elif request.conversation_id.startswith(GROUP_PREFIX):
            read_only = await asyncio.to_thread(self._store.is_dissolved, request.conversation_id)
        return group_pb2.CheckMemberResponse(
            is_member=True, member=member, send_blocked=blocked, read_only=read_only
        )

    @_rpc
    async def CheckMembers(
        self, request: group_pb2.CheckMembersRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.CheckMembersResponse:
        if len(request.conversation_ids) > MAX_MEMBERSHIP_CHECKS:
            raise invalid(f"at most {MAX_MEMBERSHIP_CHECKS} conversation ids per call")
        # As CheckMember: a malformed id is simply not a membership.
        wanted = [c for c in dict.fromkeys(request.conversation_ids) if is_valid_conversation_id(c)]
        if request.user_id <= 0 or not wanted:
            return group_pb2.CheckMembersResponse()
        found = await asyncio.to_thread(self._store.member_of, request.user_id, wanted)
        return group_pb2.CheckMembersResponse(member_of=found)

    @_rpc
    async def UpdateCursors(
        self, request: group_pb2.UpdateCursorsRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.UpdateCursorsResponse:
        targets, confirm = coalesce_cursor_updates(request.updates)
        if not targets:
            return group_pb2.UpdateCursorsResponse(applied=0)
        applied, stored = await asyncio.to_thread(self._store.update_cursors, targets, confirm)
        return group_pb2.UpdateCursorsResponse(applied=applied, stored_reads=stored)

    @_rpc
    async def GetCursors(
        self, request: group_pb2.GetCursorsRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.MembersResponse:
        _require_conversation_id(request.conversation_id)
        user_ids = list(dict.fromkeys(_require_user_ids(request.user_ids, "user_ids")))
        members = await asyncio.to_thread(
            self._store.get_cursors, request.conversation_id, user_ids
        )
        return group_pb2.MembersResponse(members=members)

    @_rpc
    async def SetMemberRole(
        self, request: group_pb2.SetMemberRoleRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.MembersResponse:
        _require_conversation_id(request.conversation_id)
        _require_user_id(request.actor_id, "actor_id")
        _require_user_id(request.user_id, "user_id")
        member, version = await asyncio.to_thread(
            self._store.set_member_role,
            request.conversation_id,
            request.actor_id,
            request.user_id,
            request.role,
        )
        return group_pb2.MembersResponse(members=[member], change_version=version)

    @_rpc
    async def CountReaders(
        self, request: group_pb2.ReadersRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ReadersCount:
        _require_conversation_id(request.conversation_id)
        seq = _require_seq(request.seq, "seq")
        if seq <= 0:
            raise invalid("seq must be positive")
        read, unread = await asyncio.to_thread(
            self._store.count_readers, request.conversation_id, seq, request.exclude_user_id
        )
        return group_pb2.ReadersCount(read_count=read, unread_count=unread)

    @_rpc
    async def ListReaders(
        self, request: group_pb2.ListReadersRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.MembersResponse:
        _require_conversation_id(request.conversation_id)
        seq = _require_seq(request.seq, "seq")
        if seq <= 0:
            raise invalid("seq must be positive")
        after = _page_after(request.cursor)
        limit = min(request.limit or 100, 1000)  # bounded pages: memory stays flat
        members, next_cursor = await asyncio.to_thread(
            self._store.list_readers,
            request.conversation_id,
            seq,
            request.exclude_user_id,
            request.read,
            after,
            limit,
        )
        return group_pb2.MembersResponse(members=members, next_cursor=next_cursor)

    # --- blocking and privacy -------------------------------------------------------
    @_rpc
    async def Block(
        self, request: group_pb2.BlockRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.BlockResponse:
        user_id, target_id = _require_pair(request)
        changed = await asyncio.to_thread(self._privacy.block, user_id, target_id)
        if changed:
            log.info("user %d blocked user %d", user_id, target_id)
        return group_pb2.BlockResponse(
            changed=changed, conversation_id=direct_conversation_id(user_id, target_id)
        )

    @_rpc
    async def Unblock(
        self, request: group_pb2.BlockRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.BlockResponse:
        user_id, target_id = _require_pair(request)
        changed = await asyncio.to_thread(self._privacy.unblock, user_id, target_id)
        return group_pb2.BlockResponse(
            changed=changed, conversation_id=direct_conversation_id(user_id, target_id)
        )

    @_rpc
    async def ListBlocks(
        self, request: group_pb2.ListBlocksRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ListBlocksResponse:
        user_id = _require_user_id(request.user_id, "user_id")
        blocked, blocked_by = await asyncio.to_thread(self._privacy.list_blocks, user_id)
        return group_pb2.ListBlocksResponse(blocked_ids=blocked, blocked_by_ids=blocked_by)

    @_rpc
    async def GetPrivacy(
        self, request: group_pb2.GetPrivacyRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.PrivacySettings:
        user_id = _require_user_id(request.user_id, "user_id")
        return await asyncio.to_thread(self._privacy.get_privacy, user_id)

    @_rpc
    async def SetPrivacy(
        self, request: group_pb2.PrivacySettings, context: grpc.aio.ServicerContext
    ) -> group_pb2.PrivacySettings:
        _require_user_id(request.user_id, "user_id")
        return await asyncio.to_thread(self._privacy.set_privacy, request)


def _require_pair(request: group_pb2.BlockRequest) -> tuple[int, int]:
    user_id = _require_user_id(request.user_id, "user_id")
    target_id = _require_user_id(request.target_id, "target_id")
    if user_id == target_id:
        raise invalid("a user cannot block themself")
    return user_id, target_id
