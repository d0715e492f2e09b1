"""Who may write to, ack or read a conversation: a cache in front of the group service,
so the hot path is a dict hit."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from im.clock import Clock
from im.config import Settings
from im.grpcutil import ChannelPool
from im.ids import DIRECT_PREFIX, parse_direct
from im.v1 import group_pb2, group_pb2_grpc, user_pb2, user_pb2_grpc
from im.validation import is_id

RPC_TIMEOUT = 5.0
CHECK_CHUNK = 1000  # the group service's limit of ids per CheckMembers call
MAX_CACHED = 500_000


class Signal(Enum):
    """What becomes of a signal (typing) of a user in a conversation."""

    ALLOWED = "allowed"
    REFUSED = "refused"  # not a member, a blocked 1:1 pair or a dissolved group
    NOBODY = "nobody"  # the user's own 1:1 that no message created yet: nobody to tell


class Authorizer:
    """Membership answers, cached per (user, conversation).

    1:1 conversations are created on first send: if the sender is one of the pair and
    the peer exists, the group service creates it. Acks and reads never create one.
    """

    def __init__(self, settings: Settings, channels: ChannelPool, clock: Clock) -> None:
        self._settings = settings
        self._channels = channels
        self._clock = clock
        self._cache: dict[tuple[int, str], tuple[bool, float]] = {}
        # 1:1 conversations whose pair has a block: its members may ack and read, not
        # send. Cached apart from membership, with the same invalidation.
        self._send_blocked: dict[str, tuple[bool, float]] = {}
        # Membership events invalidate entries at once; the TTL bounds staleness if
        # an event is missed.
        self.positive_ttl = 30.0
        self.negative_ttl = 5.0
        # Dissolved groups: members still ack and read, nobody sends. Dissolution is
        # final, so an entry never goes stale; bounded like the cache.
        self._read_only: set[str] = set()

    def _group(self) -> group_pb2_grpc.GroupServiceStub:
        return group_pb2_grpc.GroupServiceStub(self._channels.get(self._settings.group_addr()))

    def _user(self) -> user_pb2_grpc.UserServiceStub:
        return user_pb2_grpc.UserServiceStub(self._channels.get(self._settings.user_addr()))

    def cached(self, user_id: int, conversation_id: str) -> bool | None:
        """Is the user a member, from the cache alone (None: ask). Members of a blocked
        1:1 pair or a dissolved group are members: they ack and read."""
        hit = self._cache.get((user_id, conversation_id))
        if hit is None or hit[1] < self._clock.monotonic():
            return None
        return hit[0]

    def _remember(self, user_id: int, conversation_id: str, allowed: bool) -> None:
        ttl = self.positive_ttl if allowed else self.negative_ttl
        if len(self._cache) > MAX_CACHED:
            self._cache.clear()  # bounded memory; it refills from the group service
        self._cache[(user_id, conversation_id)] = (allowed, self._clock.monotonic() + ttl)

    def forget(self, conversation_id: str, user_ids: Iterable[int] | None = None) -> None:
        self._send_blocked.pop(conversation_id, None)
        if user_ids is None:
            for key in [k for k in self._cache if k[1] == conversation_id]:
                del self._cache[key]
        else:
            for uid in user_ids:
                self._cache.pop((uid, conversation_id), None)

    def cached_send(self, user_id: int, conversation_id: str) -> bool | None:
        """May the user send here, from the cache alone (None: ask): a member, and
        neither a blocked 1:1 pair nor a dissolved group."""
        member = self.cached(user_id, conversation_id)
        if not member:
            return member
        if conversation_id in self._read_only:
            return False
        blocked = self._cached_blocked(conversation_id)
        return None if blocked is None else not blocked

    def _cached_blocked(self, conversation_id: str) -> bool | None:
        """Whether sending in the conversation is blocked, from the cache alone (None:
        ask). Only a 1:1 pair can be blocked."""
        if not conversation_id.startswith(DIRECT_PREFIX):
            return False
        blocked = self._send_blocked.get(conversation_id)
        if blocked is None or blocked[1] < self._clock.monotonic():
            return None
        return blocked[0]

    def is_read_only(self, conversation_id: str) -> bool:
        return conversation_id in self._read_only

    def mark_read_only(self, conversation_id: str) -> None:
        """A group was dissolved (its event is being delivered): sends are refused."""
        if len(self._read_only) > MAX_CACHED:
            self._read_only.clear()
        self._read_only.add(conversation_id)

    async def may_send(self, user_id: int, conversation_id: str) -> bool:
        """May the user send here; the user's own 1:1 is created if it is not yet."""
        hit = self.cached_send(user_id, conversation_id)
        if hit is not None:
            return hit
        member, blocked = await self._check(user_id, conversation_id)
        if not member and _may_become_member(user_id, conversation_id):
            member, blocked = await self._create_direct(user_id, conversation_id)
            if not member:
                self._remember(user_id, conversation_id, False)
        return member and not blocked and conversation_id not in self._read_only

    async def may_signal(self, user_id: int, conversation_id: str) -> Signal:
        """May the user send a signal (typing) here: as ``may_send`` (a member, neither
        of a blocked 1:1 pair nor of a dissolved group), but a signal creates nothing:
        in the user's own 1:1 that no message created yet there is nobody to tell."""
        member = self.cached(user_id, conversation_id)
        blocked = self._cached_blocked(conversation_id) if member else False
        if member is None or blocked is None:
            member, blocked = await self._check(user_id, conversation_id)
        if not member:
            return Signal.NOBODY if _may_become_member(user_id, conversation_id) else Signal.REFUSED
        if blocked or conversation_id in self._read_only:
            return Signal.REFUSED
        return Signal.ALLOWED

    async def members_of(self, user_id: int, conversation_ids: list[str]) -> set[str]:
        """Those of ``conversation_ids`` the user belongs to now (no 1:1 is created)."""
        found: set[str] = set()
        unknown: list[str] = []
        for conversation_id in conversation_ids:
            hit = self.cached(user_id, conversation_id)
            if hit:
                found.add(conversation_id)
            elif hit is None:
                unknown.append(conversation_id)
        for start in range(0, len(unknown), CHECK_CHUNK):
            chunk = unknown[start : start + CHECK_CHUNK]
            reply = await self._group().CheckMembers(
                group_pb2.CheckMembersRequest(user_id=user_id, conversation_ids=chunk),
                timeout=RPC_TIMEOUT,
            )
            members = set(reply.member_of)
            found |= members
            for conversation_id in chunk:
                if conversation_id in members:
                    self._remember(user_id, conversation_id, True)
                elif not _may_become_member(user_id, conversation_id):
                    # Not cached for the user's own uncreated 1:1: its first send
                    # creates it, and a cached "no" would refuse that send.
                    self._remember(user_id, conversation_id, False)
        return found

    async def _check(self, user_id: int, conversation_id: str) -> tuple[bool, bool]:
        """(member, sending blocked), asked of the group service and remembered; creates
        nothing. A blocked 1:1 pair stays members (the history is theirs) but may not
        send."""
        reply = await self._group().CheckMember(
            group_pb2.CheckMemberRequest(conversation_id=conversation_id, user_id=user_id),
            timeout=RPC_TIMEOUT,
        )
        if reply.is_member:
            if reply.read_only:
                self.mark_read_only(conversation_id)
            if conversation_id.startswith(DIRECT_PREFIX):
                if len(self._send_blocked) > MAX_CACHED:
                    self._send_blocked.clear()
                expires = self._clock.monotonic() + self.positive_ttl
                self._send_blocked[conversation_id] = (reply.send_blocked, expires)
            self._remember(user_id, conversation_id, True)
        elif not _may_become_member(user_id, conversation_id):
            # Not cached for the user's own uncreated 1:1: its first send creates it.
            self._remember(user_id, conversation_id, False)
        return reply.is_member, reply.send_blocked

    async def _create_direct(self, user_id: int, conversation_id: str) -> tuple[bool, bool]:
        """The user's own 1:1, created if its peer exists: (member, sending blocked)."""
        pair = parse_direct(conversation_id)
        assert pair is not None
        peer = pair[0] if pair[1] == user_id else pair[1]
        users = await self._user().GetUsers(
            user_pb2.GetUsersRequest(user_ids=[peer]), timeout=RPC_TIMEOUT
        )
        if not users.users:
            return False, False
        await self._group().GetOrCreateDirect(
            group_pb2.GetOrCreateDirectRequest(user_a=user_id, user_b=peer), timeout=RPC_TIMEOUT
        )
        return await self._check(user_id, conversation_id)


def _may_become_member(user_id: int, conversation_id: str) -> bool:
    """A 1:1 conversation of this user: created by its first send. Only between ids a
    column can hold: a larger peer id names nobody (and fits no request)."""
    pair = parse_direct(conversation_id)
    return pair is not None and user_id in pair and is_id(pair[0]) and is_id(pair[1])
