"""The gateway's logic, independent of HTTP: talks to the user and group services over
gRPC, to the registry, presence, sessions and the message store, and issues and
checks access tokens. ``api.py`` maps it onto routes; errors leave as ``ApiError``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from im.auth import Claims, TokenError, TokenIssuer, TokenVerifier
from im.config import Settings
from im.grpcutil import ChannelPool
from im.ids import GROUP_PREFIX, is_valid_conversation_id, parse_direct
from im.ports import Backends, ConnectorInfo, MessageStore
from im.v1 import (
    bus_pb2,
    connector_pb2,
    connector_pb2_grpc,
    group_pb2,
    group_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
    wire_pb2,
)
from services.gateway.assignment import ConnectorProber, RecentAssignments, pick_connector
from services.gateway.limits import LoginLimits, RateLimited
from services.gateway.readiness import check_readiness
from services.gateway.sessions import Issued, RefreshRefused, Sessions

log = logging.getLogger("im.gateway")

T = TypeVar("T")

RPC_TIMEOUT = 5.0  # every call to user/group
KICK_TIMEOUT = 2.0  # logout answers even when the connector is slow or gone
TOKEN_LEEWAY = 5.0  # clock skew accepted when verifying tokens
# Bus notifications follow a change that is already committed: a slow broker must not
# hold the REST answer (routers and connectors also revalidate by member_version/TTL).
PUBLISH_TIMEOUT = 2.0
DEGRADED_LOG_EVERY = 10.0
USER_LOOKUP_CHUNK = 1000  # the user service's MAX_USERS_PER_LOOKUP
UNKNOWN_IDS_IN_DETAIL = 20  # the problem's user_ids member carries them all


class ApiError(Exception):
    """An error with a stable problem code, rendered as application/problem+json.

    ``extra`` adds RFC 9457 extension members (e.g. ``user_ids`` of ``unknown_users``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.extra = extra


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, {"WWW-Authenticate": "Bearer"})


def forbidden(detail: str = "not a member of this conversation") -> ApiError:
    return ApiError(403, "forbidden", detail)


def no_such_group() -> ApiError:
    return ApiError(404, "not_found", "no such group")


_GRPC_ERRORS: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.ALREADY_EXISTS: (409, "username_taken"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "invalid_credentials"),
    grpc.StatusCode.INVALID_ARGUMENT: (422, "invalid_request"),
    grpc.StatusCode.FAILED_PRECONDITION: (422, "invalid_request"),
    grpc.StatusCode.OUT_OF_RANGE: (422, "invalid_request"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "forbidden"),
    grpc.StatusCode.UNAVAILABLE: (503, "unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (503, "unavailable"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (503, "unavailable"),
    grpc.StatusCode.CANCELLED: (503, "unavailable"),
    grpc.StatusCode.ABORTED: (503, "unavailable"),
}


def rpc_error(
    exc: grpc.aio.AioRpcError, overrides: dict[grpc.StatusCode, tuple[int, str]] | None = None
) -> ApiError:
    """The problem a failed user/group call becomes. ``overrides`` give a status a
    more precise meaning for one call (FAILED_PRECONDITION of AddMembers is a full
    group, of RemoveMember the owner leaving)."""
    code = exc.code()
    mapped = (overrides or {}).get(code) or _GRPC_ERRORS.get(code)
    if mapped is None:
        # INTERNAL, UNKNOWN, ...: a bug on the other side; its text stays in our log.
        log.error("backend call failed: %s %s", code, exc.details())
        return ApiError(500, "internal", "internal error")
    status, problem = mapped
    if status == 503:
        log.warning("backend unavailable: %s %s", code, exc.details())
        return ApiError(503, "unavailable", "a backend service is unavailable; retry later")
    if status == 401:
        return ApiError(401, "invalid_credentials", "wrong username or password")
    # The other services' messages describe the caller's mistake (e.g. username shape).
    return ApiError(status, problem, exc.details() or problem)


def rate_limited(exc: RateLimited) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        exc.detail,
        {"Retry-After": exc.retry_after_header},
        extra={"retry_after": int(exc.retry_after_header)},
    )


@dataclass(frozen=True, slots=True)
class LoginResult:
    access_token: str
    expires_in: int
    user_id: int
    device_id: str
    connector: ConnectorInfo
    heartbeat_interval: float
    refresh_token: str = ""
    refresh_expires_in: int = 0


@dataclass(frozen=True, slots=True)
class ConversationView:
    conversation_id: str
    kind: str
    name: str
    peer_id: int | None
    last_seq: int
    delivered_seq: int
    read_seq: int
    unread: int


_KINDS = {
    group_pb2.CONVERSATION_KIND_DIRECT: "direct",
    group_pb2.CONVERSATION_KIND_GROUP: "group",
}

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


@dataclass(frozen=True, slots=True)
class ReceiptsView:
    conversation_id: str
    seq: int
    sender_id: int
    read_count: int
    unread_count: int
    # None when that list was not asked for; else (user ids, next cursor or None).
    read_by: tuple[list[int], str | None] | None
    unread: tuple[list[int], str | None] | None


class Gateway:
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        message_store: MessageStore,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        rpc_timeout: float = RPC_TIMEOUT,
    ) -> None:
        self.settings = settings
        self._backends = backends
        self._messages = message_store
        self._issuer = issuer
        self._verifier = verifier
        self._timeout = rpc_timeout
        self._pool = ChannelPool.for_settings(settings)  # user + group: live as long as we do
        self._connector_pool = ChannelPool.for_settings(settings)  # dropped on failure
        self._users: user_pb2_grpc.UserServiceStub | None = None
        self._groups: group_pb2_grpc.GroupServiceStub | None = None
        self._recent = RecentAssignments()
        self._prober = ConnectorProber(backends.registry, self._connector_pool)
        self._degraded_logged: dict[str, float] = {}
        self.limits = LoginLimits(settings, lambda: self._backends.rate_limits, self._degraded)
        self.sessions = Sessions(
            settings,
            issuer,
            lambda: self.users,
            lambda: self._backends.sessions,
            self._rpc,
            self._backend,
            self._kick,
            TOKEN_LEEWAY,
        )

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Create the channels; grpc.aio channels belong to the running loop."""
        self._users = user_pb2_grpc.UserServiceStub(self._pool.get(self.settings.user_addr()))
        self._groups = group_pb2_grpc.GroupServiceStub(self._pool.get(self.settings.group_addr()))
        self._prober.start()

    async def close(self) -> None:
        await self._prober.stop()
        await self._pool.close()
        await self._connector_pool.close()

    @property
    def users(self) -> user_pb2_grpc.UserServiceStub:
        if self._users is None:
            raise RuntimeError("gateway not started")
        return self._users

    @property
    def groups(self) -> group_pb2_grpc.GroupServiceStub:
        if self._groups is None:
            raise RuntimeError("gateway not started")
        return self._groups

    # ------------------------------------------------------------------- helpers
    async def _rpc(
        self,
        call: Any,
        request: Any,
        overrides: dict[grpc.StatusCode, tuple[int, str]] | None = None,
    ) -> Any:
        try:
            return await call(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, overrides) from exc

    async def _publish(self, topic: str, key: str, record: Any) -> None:
        """Best effort: the change is already committed, so a failure here must not
        turn a success into an error. Routers and connectors revalidate membership by
        member_version and TTL, and receipts can always be pulled, so a lost record
        only delays what others see."""
        try:
            await asyncio.wait_for(
                self._backends.bus.publish(topic, key, record.SerializeToString()),
                PUBLISH_TIMEOUT,
            )
        except Exception as exc:
            log.warning("could not publish %s for %s: %r", type(record).__name__, key, exc)

    async def _publish_membership(
        self, conversation_id: str, added: list[int], removed: list[int], at_seq: int
    ) -> None:
        event = bus_pb2.MembershipEvent(
            conversation_id=conversation_id, added=added, removed=removed, at_seq=at_seq
        )
        await self._publish(self.settings.topic_membership, conversation_id, event)

    @staticmethod
    async def _backend(what: str, op: Awaitable[T]) -> T:
        """A call into a port adapter (Redis, ZooKeeper, the message store): failures
        become 503 so clients retry, instead of a 500 that looks like our bug."""
        try:
            return await op
        except ApiError:
            raise
        except Exception as exc:
            log.warning("%s failed: %r", what, exc)
            raise ApiError(503, "unavailable", f"{what} is unavailable; retry later") from exc

    async def _degraded(self, what: str, op: Awaitable[T], fallback: T, consequence: str) -> T:
        """A call whose answer only sharpens a request (a revocation check, a rate
        limit): when its backend is down, go on without it, and say so in the log
        (at most every DEGRADED_LOG_EVERY seconds per backend), rather than turn every
        request away while, say, Redis restarts."""
        try:
            return await op
        except Exception as exc:
            now = time.monotonic()
            if now - self._degraded_logged.get(what, -DEGRADED_LOG_EVERY) >= DEGRADED_LOG_EVERY:
                self._degraded_logged[what] = now
                log.warning("%s unavailable (%r): %s", what, exc, consequence)
            return fallback

    # ---------------------------------------------------------------------- auth
    async def register(
        self, username: str, password: str, display_name: str, address: str = ""
    ) -> user_pb2.User:
        try:
            await self.limits.register(address)
        except RateLimited as exc:
            raise rate_limited(exc) from None
        request = user_pb2.RegisterRequest(
            username=username, password=password, display_name=display_name
        )
        response = await self._rpc(self.users.Register, request)
        return response.user

    async def login(
        self, username: str, password: str, device_id: str, address: str = ""
    ) -> LoginResult:
        """Checks the password (failures from this address back off), opens a session
        (ending the device's previous one) and assigns a connector."""
        request = user_pb2.AuthenticateRequest(username=username, password=password)
        user = await self._limited_call(
            username, address, self._rpc(self.users.Authenticate, request)
        )
        connector = await self._assign_connector(user.user.user_id, device_id)
        issued = await self.sessions.open(user.user.user_id, device_id, time.time())
        return self._login_result(issued, connector)

    async def refresh(self, refresh_token: str, address: str = "") -> LoginResult:
        """New access and refresh tokens for a session; the old refresh token is spent."""
        # Refresh tokens cannot be guessed, but each try costs a database look-up:
        # wrong ones back off like wrong passwords.
        issued = await self._limited_call(
            "(refresh)", address, self.sessions.refresh(refresh_token, time.time())
        )
        connector = await self._assign_connector(issued.claims.user_id, issued.claims.device_id)
        return self._login_result(issued, connector)

    async def change_password(
        self, claims: Claims, current: str, new: str, address: str = ""
    ) -> int:
        """Wrong current passwords count as failed logins of this user and address."""
        return await self._limited_call(
            f"#{claims.user_id}", address, self.sessions.change_password(claims, current, new)
        )

    async def _limited_call(self, who: str, address: str, call: Awaitable[T]) -> T:
        """Runs a credential check under the failed-login limits of (who, address)."""
        try:
            await self.limits.check(who, address)
        except RateLimited as exc:
            close = getattr(call, "close", None)
            if close is not None:
                close()  # never awaited: do not leave a "never awaited" warning
            raise rate_limited(exc) from None
        try:
            result = await call
        except RefreshRefused:
            await self.limits.failed(who, address)
            raise unauthorized("invalid, expired or revoked refresh token") from None
        except ApiError as exc:
            if exc.status == 401:
                await self.limits.failed(who, address)
            raise
        await self.limits.succeeded(who, address)
        return result

    def _login_result(self, issued: Issued, connector: ConnectorInfo) -> LoginResult:
        return LoginResult(
            access_token=issued.access_token,
            expires_in=self._issuer.ttl_seconds,
            user_id=issued.claims.user_id,
            device_id=issued.claims.device_id,
            connector=connector,
            heartbeat_interval=self.settings.heartbeat_interval,
            refresh_token=issued.refresh_token,
            refresh_expires_in=issued.refresh_expires_in,
        )

    async def _assign_connector(self, user_id: int, device_id: str) -> ConnectorInfo:
        listed = await self._backend("registry", self._backends.registry.connectors())
        connectors = self._prober.usable(listed)
        if not connectors:
            raise ApiError(503, "no_connector", "no connector is available; retry later")
        current = await self._sticky_connector(user_id, device_id)
        now = time.monotonic()
        chosen = pick_connector(connectors, current, self._recent.counts(now))
        assert chosen is not None
        self._recent.add(chosen.connector_id, now)
        return chosen

    async def _sticky_connector(self, user_id: int, device_id: str) -> str | None:
        """The connector the device is on now, if presence can tell: only a preference,
        so a presence outage must not fail the login."""
        try:
            return await self._device_connector(user_id, device_id)
        except ApiError:
            return None

    async def _device_connector(self, user_id: int, device_id: str) -> str | None:
        routes = await self._backend("presence", self._backends.presence.routes([user_id]))
        for route in routes.get(user_id, []):
            if route.device_id == device_id:
                return route.connector_id
        return None

    async def authenticate(self, token: str) -> Claims:
        try:
            claims = self._verifier.verify(token)
        except TokenError as exc:
            raise unauthorized("invalid or expired access token") from exc
        revoked = await self._degraded(
            "sessions",
            self._backends.sessions.is_revoked(claims.session_id),
            False,
            "logged-out tokens are accepted until they expire",
        )
        if revoked:
            raise unauthorized("the session has been logged out")
        return claims

    async def logout(self, claims: Claims) -> None:
        """Ends this token's session, its refresh token included; kicks its socket."""
        await self.sessions.logout(claims)

    async def logout_all(self, claims: Claims) -> int:
        """Ends every session of the user and kicks every socket of theirs."""
        return await self.sessions.logout_all(claims)

    async def _kick(self, claims: Claims, reason: int) -> None:
        connector_id = await self._device_connector(claims.user_id, claims.device_id)
        if connector_id is None:
            return
        connectors = await self._backends.registry.connectors()
        info = next((c for c in connectors if c.connector_id == connector_id), None)
        if info is None:
            return  # the connector is gone, and the connection with it
        stub = connector_pb2_grpc.ConnectorServiceStub(self._connector_pool.get(info.grpc_addr))
        request = connector_pb2.KickRequest(
            user_id=claims.user_id,
            device_id=claims.device_id,
            reason=reason,
            session_id=claims.session_id,
        )
        try:
            await stub.Kick(request, timeout=KICK_TIMEOUT)
        except grpc.aio.AioRpcError:
            # A dead address must not keep a channel around forever.
            await self._connector_pool.drop(info.grpc_addr)
            raise

    # --------------------------------------------------------------------- users
    async def get_users(
        self, user_ids: list[int] | None = None, usernames: list[str] | None = None
    ) -> list[user_pb2.User]:
        request = user_pb2.GetUsersRequest(user_ids=user_ids or [], usernames=usernames or [])
        return list((await self._rpc(self.users.GetUsers, request)).users)

    async def get_user(self, user_id: int) -> user_pb2.User:
        users = await self.get_users(user_ids=[user_id])
        if not users:
            raise ApiError(404, "not_found", f"user {user_id} does not exist")
        return users[0]

    # ------------------------------------------------------------- conversations
    async def open_direct(self, me: int, peer_id: int) -> ConversationView:
        if peer_id == me:
            raise ApiError(422, "invalid_request", "a direct conversation needs another user")
        await self.get_user(peer_id)
        request = group_pb2.GetOrCreateDirectRequest(user_a=me, user_b=peer_id)
        conversation = (await self._rpc(self.groups.GetOrCreateDirect, request)).conversation
        member = await self._member(conversation.conversation_id, me)
        if member is None:  # cannot happen for a pair we just created; be safe
            raise forbidden()
        last = await self._last_seqs([conversation.conversation_id])
        return self._view(me, conversation, member, last)

    async def conversations(self, me: int) -> list[ConversationView]:
        request = group_pb2.ListUserConversationsRequest(user_id=me)
        entries = (await self._rpc(self.groups.ListUserConversations, request)).conversations
        # One message-store round trip for every conversation, not one each.
        last = await self._last_seqs([e.conversation.conversation_id for e in entries])
        return [self._view(me, e.conversation, e.member, last) for e in entries]

    async def _last_seqs(self, conversation_ids: list[str]) -> dict[str, int]:
        if not conversation_ids:
            return {}
        return await self._backend("message store", self._messages.last_seqs(conversation_ids))

    @staticmethod
    def _view(
        me: int,
        conversation: group_pb2.Conversation,
        member: group_pb2.Member,
        last_seqs: dict[str, int],
    ) -> ConversationView:
        cid = conversation.conversation_id
        last_seq = last_seqs.get(cid, 0)
        peer_id = None
        pair = parse_direct(cid)
        if pair is not None:
            peer_id = pair[1] if pair[0] == me else pair[0]
        # Messages before the member joined are not theirs to read, so not unread.
        read_floor = max(member.read_seq, member.joined_seq)
        return ConversationView(
            conversation_id=cid,
            kind=_KINDS.get(conversation.kind, "direct" if pair else "group"),
            name=conversation.name,
            peer_id=peer_id,
            last_seq=last_seq,
            delivered_seq=member.delivered_seq,
            read_seq=member.read_seq,
            unread=max(0, last_seq - read_floor),
        )

    async def _member(self, conversation_id: str, user_id: int) -> group_pb2.Member | None:
        request = group_pb2.CheckMemberRequest(conversation_id=conversation_id, user_id=user_id)
        try:
            response = await self._rpc(self.groups.CheckMember, request)
        except ApiError as exc:
            # An unknown conversation answers like one the user is not in: ids of
            # other people's conversations must not be probeable.
            if exc.status in (403, 404):
                return None
            raise
        return response.member if response.is_member else None

    async def _require_member(self, conversation_id: str, user_id: int) -> group_pb2.Member:
        if not is_valid_conversation_id(conversation_id):
            raise ApiError(404, "not_found", "no such conversation")
        member = await self._member(conversation_id, user_id)
        if member is None:
            raise forbidden()
        return member

    async def history(
        self, me: int, conversation_id: str, after_seq: int, limit: int
    ) -> tuple[list[wire_pb2.Message], bool]:
        member = await self._require_member(conversation_id, me)
        # A member sees only what was sent after it joined.
        after = max(after_seq, member.joined_seq)
        # One extra row tells whether another page exists without a count query.
        messages = await self._backend(
            "message store", self._messages.history(conversation_id, after, limit + 1)
        )
        return messages[:limit], len(messages) > limit

    async def update_cursor(
        self, me: int, conversation_id: str, seq: int, read: bool, device_id: str = ""
    ) -> None:
        await self._require_member(conversation_id, me)
        # A cursor beyond the last stored message would hide messages still to come.
        last = (await self._last_seqs([conversation_id])).get(conversation_id, 0)
        seq = min(seq, last)
        if seq <= 0:
            return  # nothing to move (0 means "unchanged" to the group service)
        update = group_pb2.CursorUpdate(
            conversation_id=conversation_id,
            user_id=me,
            delivered_seq=seq,  # having read something implies having received it
            read_seq=seq if read else 0,
        )
        await self._rpc(self.groups.UpdateCursors, group_pb2.UpdateCursorsRequest(updates=[update]))
        # Written directly so the answer reflects it; also reported on the bus, the
        # path socket reads take, so the router pushes the Receipt to the other
        # members now. The router's own cursor write of it is a no-op (forward-only).
        report = bus_pb2.CursorReport(
            conversation_id=conversation_id,
            user_id=me,
            device_id=device_id,
            delivered_seq=seq,
            read_seq=seq if read else 0,
        )
        await self._publish(self.settings.topic_cursors, conversation_id, report)

    # -------------------------------------------------------------------- groups
    async def _missing_users(self, user_ids: list[int]) -> list[int]:
        """Those of ``user_ids`` that do not exist, in request order. The user service
        answers at most USER_LOOKUP_CHUNK ids per call; the chunks go in parallel."""
        chunks = [
            user_ids[start : start + USER_LOOKUP_CHUNK]
            for start in range(0, len(user_ids), USER_LOOKUP_CHUNK)
        ]
        answers = await asyncio.gather(*(self.get_users(user_ids=chunk) for chunk in chunks))
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
            conversation = (await self._rpc(self.groups.GetConversation, request)).conversation
        except ApiError as exc:
            if exc.status in (404, 422):
                raise no_such_group() from exc
            raise
        if conversation.kind != group_pb2.CONVERSATION_KIND_GROUP:
            raise no_such_group()
        return conversation

    async def _group_member(self, group_id: str, user_id: int) -> group_pb2.Member:
        """The caller's membership: 404 for an unknown group, 403 for a non-member."""
        member = await self._member(group_id, user_id)
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
        response = await self._rpc(self.groups.CreateGroup, request, _GROUP_FULL)
        conversation = response.conversation
        # Nobody can have cached a brand-new id, but connectors may hold a negative
        # "not a member" for it from an early send: the event clears that too.
        await self._publish_membership(conversation.conversation_id, [me, *others], [], 0)
        return GroupView(conversation, "owner")

    async def get_group(self, me: int, group_id: str) -> GroupView:
        conversation, member = await asyncio.gather(
            self._group(group_id), self._member(group_id, me)
        )
        if member is None:
            raise forbidden("not a member of this group")
        return GroupView(conversation, role_name(member.role))

    async def add_members(self, me: int, group_id: str, user_ids: list[int]) -> list[int]:
        """Adds the users not yet in the group; returns those added."""
        conversation, actor = await asyncio.gather(
            self._group(group_id), self._member(group_id, me)
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
            at_seq = (await self._last_seqs([group_id])).get(group_id, 0)
        request = group_pb2.AddMembersRequest(
            conversation_id=group_id, actor_id=me, user_ids=wanted, at_seq=at_seq
        )
        response = await self._rpc(self.groups.AddMembers, request, _GROUP_FULL)
        added = [m.user_id for m in response.members]
        if added:
            await self._publish_membership(group_id, added, [], at_seq)
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
        await self._rpc(self.groups.RemoveMember, request, _OWNER_CANNOT_LEAVE)
        await self._publish_membership(group_id, [], [user_id], 0)

    async def leave_group(self, me: int, group_id: str) -> None:
        # Looked up first: RemoveMember answers NOT_FOUND both for an unknown group
        # and for a non-member, which must be 404 and 403 here.
        await self._group_member(group_id, me)
        request = group_pb2.RemoveMemberRequest(conversation_id=group_id, actor_id=me, user_id=me)
        await self._rpc(self.groups.RemoveMember, request, _OWNER_CANNOT_LEAVE)
        await self._publish_membership(group_id, [], [me], 0)

    async def list_members(
        self, me: int, group_id: str, cursor: str, limit: int
    ) -> tuple[list[group_pb2.Member], str | None]:
        await self._group_member(group_id, me)
        request = group_pb2.ListMembersRequest(conversation_id=group_id, cursor=cursor, limit=limit)
        response = await self._rpc(self.groups.ListMembers, request)
        return list(response.members), response.next_cursor or None

    async def set_role(self, me: int, group_id: str, user_id: int, role: str) -> group_pb2.Member:
        request = group_pb2.SetMemberRoleRequest(
            conversation_id=group_id, actor_id=me, user_id=user_id, role=ROLES_BY_NAME[role]
        )
        response = await self._rpc(self.groups.SetMemberRole, request, _OWNER_ROLE_FIXED)
        return response.members[0]

    # ------------------------------------------------------------------ receipts
    async def receipts(
        self,
        me: int,
        conversation_id: str,
        seq: int,
        cursor: str,
        limit: int,
        which: str,
    ) -> ReceiptsView:
        """Who has (not) read message ``seq``, from the members' read cursors.

        Counts are one aggregate query; the lists are pages of at most ``limit`` ids
        (``which``: "read", "unread" or "both"), so memory stays flat in any group.
        """
        member = await self._require_member(conversation_id, me)
        not_found = ApiError(404, "not_found", f"no message {seq} in this conversation")
        if seq <= member.joined_seq:
            raise not_found  # from before the caller joined: not theirs to see
        found = await self._backend(
            "message store", self._messages.history(conversation_id, seq - 1, 1)
        )
        if not found or found[0].seq != seq:
            raise not_found
        sender = found[0].sender_id  # the sender has read its own message: not counted
        count = self._rpc(
            self.groups.CountReaders,
            group_pb2.ReadersRequest(
                conversation_id=conversation_id, seq=seq, exclude_user_id=sender
            ),
        )
        lists = {"read": [True], "unread": [False], "both": [True, False]}[which]
        pages = [
            self._rpc(
                self.groups.ListReaders,
                group_pb2.ListReadersRequest(
                    conversation_id=conversation_id,
                    seq=seq,
                    exclude_user_id=sender,
                    read=read,
                    cursor=cursor,
                    limit=limit,
                ),
            )
            for read in lists
        ]
        counts, *answers = await asyncio.gather(count, *pages)
        by_kind = {
            read: ([m.user_id for m in answer.members], answer.next_cursor or None)
            for read, answer in zip(lists, answers, strict=True)
        }
        return ReceiptsView(
            conversation_id=conversation_id,
            seq=seq,
            sender_id=sender,
            read_count=counts.read_count,
            unread_count=counts.unread_count,
            read_by=by_kind.get(True),
            unread=by_kind.get(False),
        )

    # ----------------------------------------------------------------- readiness
    async def readiness(self) -> tuple[bool, dict[str, str]]:
        return await check_readiness(self.settings, self._pool, self._messages, self._backends)
