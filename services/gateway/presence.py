"""Presence as the gateway serves it: who of a conversation is online (the presence
store's routes) and when each was last seen (the user service), respecting every
user's hide setting; and the caller's own setting.

One answer costs a lookup per member, so it is bounded: groups over
``presence_max_members`` are refused (422, a clear code, rather than a partial list a
client could take for the whole), and each user may ask ``presence_reads_per_minute``
times a minute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from im.clock import Clock, SystemClock
from im.config import Settings
from im.ids import GROUP_PREFIX
from im.ports import Backends, RateLimiter
from im.v1 import group_pb2, group_pb2_grpc, user_pb2, user_pb2_grpc
from services.gateway.calls import Calls
from services.gateway.conversations import ConversationOps
from services.gateway.errors import ApiError, rate_limited
from services.gateway.limits import RateLimited

INFO_CHUNK = 1000  # the user service's limit of ids per PresenceGetInfo
READ_WINDOW = 60.0  # seconds of the per-user read limit


@dataclass(frozen=True, slots=True)
class MemberPresence:
    user_id: int
    online: bool
    last_seen_ms: int | None  # None: unknown or hidden


class PresenceOps:
    """The presence operations of ``Gateway`` (``gateway.presence_ops``)."""

    def __init__(
        self,
        settings: Settings,
        users: Callable[[], user_pb2_grpc.UserServiceStub],
        groups: Callable[[], group_pb2_grpc.GroupServiceStub],
        backends: Backends,
        limiter: Callable[[], RateLimiter],
        calls: Calls,
        conversations: ConversationOps,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._limiter = limiter  # looked up per call: tests swap the backends
        self._users = users
        self._groups = groups
        self._backends = backends
        self._calls = calls
        self._conversations = conversations
        self._clock = clock or SystemClock()

    async def of_conversation(self, me: int, conversation_id: str) -> list[MemberPresence]:
        """Every other member's presence; members only (403 otherwise), groups up to
        ``presence_max_members`` (422 otherwise), at the user's read rate (429)."""
        await self._limit(me)
        await self._conversations.require_member(conversation_id, me)
        others = [u for u in await self._member_ids(conversation_id) if u != me]
        if not others:
            return []
        infos = await self.infos(others)
        routes = await self._calls.backend("presence", self._backends.presence.routes(others))
        blocks = await self._calls.rpc(
            self._groups().ListBlocks, group_pb2.ListBlocksRequest(user_id=me)
        )
        # A block (either way) hides presence, as the hide setting does.
        blocked = set(blocks.blocked_ids) | set(blocks.blocked_by_ids)
        now = self._clock.wall_ms()
        out = []
        for user_id in others:
            info = infos.get(user_id)
            if user_id in blocked or (info is not None and not info.visible):
                out.append(MemberPresence(user_id, False, None))
            elif routes.get(user_id):
                out.append(MemberPresence(user_id, True, now))
            else:
                seen = info.last_seen_ms if info is not None else 0
                out.append(MemberPresence(user_id, False, seen or None))
        return out

    async def _member_ids(self, conversation_id: str) -> list[int]:
        """The members of a conversation within ``presence_max_members`` (422 otherwise):
        a group's count is read first, so a large group is never listed."""
        if conversation_id.startswith(GROUP_PREFIX):
            reply = await self._calls.rpc(
                self._groups().GetConversation,
                group_pb2.GetConversationRequest(conversation_id=conversation_id),
            )
            self._require_small(reply.conversation.member_count)
        listed = await self._calls.rpc(
            self._groups().ListMemberIds,
            group_pb2.ListMemberIdsRequest(conversation_id=conversation_id),
        )
        self._require_small(len(listed.user_ids))  # it may have grown in between
        return list(listed.user_ids)

    async def _limit(self, me: int) -> None:
        limit = self._settings.presence_reads_per_minute
        if limit <= 0:
            return
        wait = await self._calls.degraded(
            "rate limiter",
            self._limiter().hit(f"presence:{me}", limit, READ_WINDOW),
            0.0,
            "presence reads are not rate-limited",
        )
        if wait > 0:
            raise rate_limited(RateLimited(wait, f"at most {limit} presence reads per minute"))

    def _require_small(self, members: int) -> None:
        limit = self._settings.presence_max_members
        if members > limit:
            raise ApiError(
                422,
                "presence_group_too_large",
                f"presence is answered for conversations of at most {limit} members",
            )

    async def infos(self, user_ids: list[int]) -> dict[int, user_pb2.PresenceInfo]:
        found: dict[int, user_pb2.PresenceInfo] = {}
        for start in range(0, len(user_ids), INFO_CHUNK):
            request = user_pb2.PresenceInfoRequest(user_ids=user_ids[start : start + INFO_CHUNK])
            reply = await self._calls.rpc(self._users().PresenceGetInfo, request)
            found.update((u.user_id, u) for u in reply.users)
        return found

    async def mine(self, me: int) -> user_pb2.PresenceInfo:
        return (await self.infos([me])).get(me) or user_pb2.PresenceInfo(user_id=me, visible=True)

    async def set_visible(self, me: int, visible: bool) -> user_pb2.PresenceInfo:
        request = user_pb2.PresenceSetVisibleRequest(user_id=me, visible=visible)
        return await self._calls.rpc(self._users().PresenceSetVisible, request)
