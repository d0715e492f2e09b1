"""The gateway's logic, independent of HTTP: talks to the user and group services over
gRPC, to the registry, presence, sessions and the message store, and issues and
checks access tokens. The ``api_*`` modules map it onto routes; errors leave as
``ApiError`` (errors.py).

``Gateway`` does login, tokens and users itself and holds the parts for the rest:
``conversation_ops`` (conversations.py), ``group_ops`` (groups.py), ``messages``
(messages.py: server-side sends), ``sessions``, ``limits`` and the connector assignment
(assignment.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from im.auth import Claims, TokenError, TokenIssuer, TokenVerifier
from im.clock import Clock, SystemClock
from im.config import Settings
from im.grpcutil import ChannelPool
from im.ids import NODE_IDS, MsgIdGenerator
from im.ports import AttachmentStore, Backends, ConnectorInfo, MessageStore
from im.sending import ServerSender
from im.v1 import admin_pb2_grpc, group_pb2_grpc, user_pb2, user_pb2_grpc
from services.gateway.admin import AdminOps
from services.gateway.admin_auth import AdminGuard, AdminTokens
from services.gateway.assignment import ConnectorAssigner, ConnectorProber
from services.gateway.attachments import AttachmentOps
from services.gateway.calls import Calls
from services.gateway.conversations import ConversationOps
from services.gateway.departure import GroupDepartures
from services.gateway.errors import ApiError, rate_limited, unauthorized
from services.gateway.group_events import GroupEvents
from services.gateway.groups import GroupOps
from services.gateway.lifecycle import GroupLifecycleOps
from services.gateway.limits import LoginLimits, RateLimited
from services.gateway.member_settings import SettingsOps
from services.gateway.message_events import MessageEventOps
from services.gateway.messages import MessageOps
from services.gateway.presence import PresenceOps
from services.gateway.privacy import PrivacyOps
from services.gateway.readiness import check_readiness
from services.gateway.search import SearchOps
from services.gateway.sessions import Issued, RefreshRefused, Sessions

T = TypeVar("T")

RPC_TIMEOUT = 5.0  # every call to user/group
# The user service answers a right password of a disabled account so.
_DISABLED = {grpc.StatusCode.PERMISSION_DENIED: (403, "account_disabled")}
TOKEN_LEEWAY = 5.0  # clock skew accepted when verifying tokens


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


class Gateway:
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        message_store: MessageStore,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        rpc_timeout: float = RPC_TIMEOUT,
        clock: Clock | None = None,
        attachments: AttachmentStore | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self._backends = backends
        self._messages = message_store
        self._issuer = issuer
        self._verifier = verifier
        self._calls = Calls(backends, rpc_timeout)
        self._pool = ChannelPool.for_settings(settings)  # user + group: live as long as we do
        self._connector_pool = ChannelPool.for_settings(settings)  # dropped on failure
        self._users: user_pb2_grpc.UserServiceStub | None = None
        self._groups: group_pb2_grpc.GroupServiceStub | None = None
        self._prober = ConnectorProber(backends.registry, self._connector_pool)
        self._connectors = ConnectorAssigner(
            backends, self._connector_pool, self._prober, self._calls
        )
        self.limits = LoginLimits(
            settings, lambda: self._backends.rate_limits, self._calls.degraded
        )
        self.sessions = Sessions(
            settings,
            issuer,
            lambda: self.users,
            lambda: self._backends.sessions,
            self._calls.rpc,
            self._calls.backend,
            self._connectors.kick,
            TOKEN_LEEWAY,
        )
        # Server-side sends (REST, gRPC, recalls and edits) mint msg ids like a
        # connector: under a node id leased from the registry in open().
        self.ids = MsgIdGenerator(0, SystemClock())
        self.sender = ServerSender(settings, backends, self.ids, SystemClock())
        self.conversation_ops = ConversationOps(
            settings, lambda: self.groups, message_store, self._calls, self.get_user
        )
        self.privacy_ops = PrivacyOps(settings, lambda: self.groups, self._calls, self.get_user)
        self.message_events = MessageEventOps(
            settings,
            self.conversation_ops,
            message_store,
            self.sender,
            self.ids,
            backends.idempotency,
            self._calls,
            self.clock,
        )
        self.messages = MessageOps(
            settings,
            self.sender,
            self.conversation_ops,
            self.get_user,
            lambda: self._backends.rate_limits,
            self._calls,
        )

        self.search_ops = SearchOps(
            settings,
            lambda: self.groups,
            message_store,
            self._calls,
            self.conversation_ops,
            lambda: self._backends.rate_limits,
        )

        self.presence_ops = PresenceOps(
            settings,
            lambda: self.users,
            lambda: self.groups,
            backends,
            lambda: self._backends.rate_limits,
            self._calls,
            self.conversation_ops,
        )

        self.settings_ops = SettingsOps(
            lambda: self.groups,
            self.conversation_ops,
            self._calls,
            backends,
            self._connector_pool,
        )

        # The operators' API (admin.py): its own credentials (admin_auth.py).
        self.admin = AdminOps(
            settings,
            None,
            self._calls,
            self.sessions,
            self._connectors,
            message_store,
            lambda user_id: self.departures.leave_all(user_id),
        )
        self.admin_guard = AdminGuard(
            settings,
            AdminTokens.from_settings(settings),
            lambda: self._backends.rate_limits,
            self._calls.degraded,
        )
        # Group changes as system events; they wait here while the bus is down.
        self.group_events = GroupEvents(self.sender)
        self.group_ops = GroupOps(
            settings,
            lambda: self.groups,
            self.conversation_ops,
            self._calls,
            lambda user_ids: self.get_users(user_ids=user_ids),
            self.group_events,
        )
        self.lifecycle_clock: Clock = SystemClock()
        self.lifecycle_ops = GroupLifecycleOps(
            lambda: self.groups, self.group_ops, self.conversation_ops, self._calls
        )
        self.departures = GroupDepartures(
            lambda: self.groups, self.group_ops, self.lifecycle_ops, self._calls
        )
        # Uploads and downloads (attachments.py); None: the routes answer 404.
        self.attachment_ops = (
            None
            if attachments is None
            else AttachmentOps(
                settings,
                attachments,
                lambda: self.groups,
                self.conversation_ops,
                self._calls,
                lambda: self._backends.rate_limits,
                SystemClock(),
            )
        )

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Create the channels; grpc.aio channels belong to the running loop."""
        self._users = user_pb2_grpc.UserServiceStub(self._pool.get(self.settings.user_addr()))
        self._groups = group_pb2_grpc.GroupServiceStub(self._pool.get(self.settings.group_addr()))
        self.admin.stub = admin_pb2_grpc.UserAdminServiceStub(
            self._pool.get(self.settings.user_addr())
        )
        self._prober.start()
        owner = f"gateway-{uuid.uuid4().hex[:12]}"
        self.ids.follow(await self._backends.registry.lease_node_id(owner, NODE_IDS))

    async def close(self) -> None:
        await self._prober.stop()
        await self.group_events.close()
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
        response = await self._calls.rpc(self.users.Register, request)
        return response.user

    async def login(
        self, username: str, password: str, device_id: str, address: str = ""
    ) -> LoginResult:
        """Checks the password (failures from this address back off), opens a session
        (ending the device's previous one) and assigns a connector."""
        request = user_pb2.AuthenticateRequest(username=username, password=password)
        user = await self._limited_call(
            username, address, self._calls.rpc(self.users.Authenticate, request, _DISABLED)
        )
        connector = await self._connectors.assign(user.user.user_id, device_id)
        issued = await self.sessions.open(user.user.user_id, device_id, time.time())
        return self._login_result(issued, connector)

    async def refresh(self, refresh_token: str, address: str = "") -> LoginResult:
        """New access and refresh tokens for a session; the old refresh token is spent."""
        # Refresh tokens cannot be guessed, but each try costs a database look-up:
        # wrong ones back off like wrong passwords.
        issued = await self._limited_call(
            "(refresh)", address, self.sessions.refresh(refresh_token, time.time())
        )
        connector = await self._connectors.assign(issued.claims.user_id, issued.claims.device_id)
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

    async def authenticate(self, token: str) -> Claims:
        try:
            claims = self._verifier.verify(token)
        except TokenError as exc:
            raise unauthorized("invalid or expired access token") from exc
        revoked = await self._calls.degraded(
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

    # --------------------------------------------------------------------- users
    async def get_users(
        self, user_ids: list[int] | None = None, usernames: list[str] | None = None
    ) -> list[user_pb2.User]:
        request = user_pb2.GetUsersRequest(user_ids=user_ids or [], usernames=usernames or [])
        return list((await self._calls.rpc(self.users.GetUsers, request)).users)

    async def get_user(self, user_id: int) -> user_pb2.User:
        users = await self.get_users(user_ids=[user_id])
        if not users:
            raise ApiError(404, "not_found", f"user {user_id} does not exist")
        return users[0]

    # ----------------------------------------------------------------- readiness
    async def readiness(self) -> tuple[bool, dict[str, str]]:
        return await check_readiness(self.settings, self._pool, self._messages, self._backends)
