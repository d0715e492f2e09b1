"""High-level client: login, connect, sync, send, and one ordered message stream
(``MessageStream``, im/client/stream.py, says what it promises); optionally it stays
connected (im/client/reconnect.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import httpx

from im.client.connection import Connection, Transport
from im.client.errors import ApiError, AuthError, ClientError, ConnectionClosed
from im.client.gateway import GatewayClient, LoginResult, as_group_id
from im.client.reconnect import Reconnected, Reconnector, ReconnectPolicy, final_kick
from im.client.signals import PresenceBook, TypingTracker
from im.client.stream import MessageStream
from im.client.transports import tls_context
from im.clock import Clock, SystemClock
from im.ids import direct_conversation_id
from im.v1 import wire_pb2

log = logging.getLogger("im.client")


class ImClient(MessageStream):
    def __init__(
        self,
        gateway_url: str,
        *,
        transport: Transport = "tcp",
        ack_every: int = 1,
        ack_delay_ms: float = 50.0,
        dedupe_size: int = 100_000,
        http_timeout: float = 10.0,
        http_transport: httpx.AsyncBaseTransport | None = None,
        ca_file: str | None = None,
        reconnect: ReconnectPolicy | bool = False,
        clock: Clock | None = None,
    ) -> None:
        """``ca_file``: the CA that signed the gateway's and connectors' certificates,
        when they serve TLS with a private or development CA.

        ``reconnect``: when the socket ends (a draining connector's Kick RECONNECT, a
        connection lost), log in again and reconnect with backoff, the stream going on
        (``True`` for the default ``ReconnectPolicy``; see im/client/reconnect.py).
        Without it the stream ends and ``connect()`` may be called again.
        """
        self.gateway = GatewayClient(
            gateway_url, timeout=http_timeout, transport=http_transport, ca_file=ca_file
        )
        self.ca_file = ca_file
        self.transport: Transport = transport
        self.ack_every = ack_every
        self.ack_delay_ms = ack_delay_ms
        self.login_result: LoginResult | None = None
        self.connection: Connection | None = None

        self._credentials: tuple[str, str, str] | None = None
        MessageStream.__init__(self, self.gateway, dedupe_size)
        self._pump: asyncio.Task[None] | None = None
        self._user_ids: dict[str, int] = {}
        self.clock = clock or SystemClock()
        # Who is typing where, and the peers' online state, as the signals told.
        self.typing = TypingTracker(self.clock)
        self.presence = PresenceBook()

        self._sync_on_connect = True
        self._closing = False
        self._ended: str | None = None  # why the stream ended, when not the socket
        self._reconnecting: asyncio.Task[None] | None = None
        policy = ReconnectPolicy() if reconnect is True else reconnect or None
        self._reconnector = (
            Reconnector(
                policy,
                self.clock,
                self._connect_again,
                self._out.put_nowait,
                self._end_stream,
            )
            if policy is not None
            else None
        )

    # ------------------------------------------------------------------ session

    @property
    def user_id(self) -> int:
        if self.login_result is None:
            raise ClientError("not logged in")
        return self.login_result.user_id

    @property
    def duplicates(self) -> int:
        """Copies dropped so far: wire retransmits plus sync/live overlap."""
        wire = self.connection.duplicates if self.connection else 0
        return wire + self._dropped

    @property
    def close_reason(self) -> str | None:
        if self._ended is not None:
            return self._ended
        return self.connection.close_reason if self.connection else None

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.closed

    async def register(
        self, username: str, password: str, display_name: str | None = None
    ) -> dict[str, Any]:
        return await self.gateway.register(username, password, display_name)

    async def login(self, username: str, password: str, device_id: str) -> LoginResult:
        self.login_result = await self.gateway.login(username, password, device_id)
        self._credentials = (username, password, device_id)
        return self.login_result

    async def connect(self, transport: Transport | None = None, *, sync: bool = True) -> None:
        """Open the socket to the assigned connector, then (by default) sync.

        Logs in again when needed: never logged in with a token, token about to
        expire, a previous connection that ended (kicked by a draining connector, or
        cut off), or a connector that refuses the connection.
        """
        if transport is not None:
            self.transport = transport
        if self.connected:
            raise ClientError("already connected")
        self._sync_on_connect = sync
        self._ended = None
        await self._connect(sync)

    async def _connect_again(self, attempt: int) -> None:
        """One reconnect attempt: what ``connect`` did the first time, then the
        conversations seen so far are caught up where the first time did not sync."""
        await self._connect(self._sync_on_connect, catch_up=True, attempts=attempt)

    async def _connect(self, sync: bool, *, catch_up: bool = False, attempts: int = 0) -> None:
        previous = self.connection
        relogin = (
            self.login_result is None
            or self.login_result.expires_within(30)
            # Kicked (a draining connector wants us elsewhere) or cut off (it may have
            # died): ask the gateway which connector to use now.
            or previous is not None
        )
        if relogin:
            await self._relogin()
        if self._pump is not None:
            # the old stream has ended; keep what the user has not consumed yet
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
            self._pump = None
        self._reopen()  # what the user has not read yet stays
        try:
            conn = await self._open()
        except AuthError as exc:
            # a revoked/expired token: one fresh login, then give up
            if self._credentials is None or exc.code != wire_pb2.ERROR_CODE_AUTH_FAILED:
                raise
            await self._relogin()
            conn = await self._open()
        except ConnectionClosed:
            # The connector is gone (refused, reset, unreachable): log in again, which
            # hands out a live one, and try that once.
            if self._credentials is None:
                raise
            await self._relogin()
            conn = await self._open()
        self.connection = conn
        if attempts:
            self._out.put_nowait(Reconnected(conn.connector_id, attempts))
        try:
            if sync:
                await self.sync()
            elif catch_up:
                await self._catch_up()
        except BaseException:
            await conn.close()
            raise
        self._pump = asyncio.create_task(self._run_pump(conn), name="im-client-pump")

    async def _relogin(self) -> None:
        """New tokens and a connector: by the refresh token when there is one (no
        password needed), else, or when the session has ended, by the password."""
        if self.gateway.refresh_token:
            try:
                self.login_result = await self.gateway.refresh()
                return
            except ApiError as exc:
                if exc.status != 401 or self._credentials is None:
                    raise
        if self._credentials is None:
            raise ClientError("call login() first")
        await self.login(*self._credentials)

    async def logout_all(self) -> None:
        """End every session of this user, on every device (this one included)."""
        await self.gateway.logout_all()
        self._credentials = None

    async def change_password(self, current_password: str, new_password: str) -> None:
        """Set a new password; the user's other sessions end, this one goes on."""
        await self.gateway.change_password(current_password, new_password)
        if self._credentials is not None:
            username, _, device_id = self._credentials
            self._credentials = (username, new_password, device_id)

    async def _open(self) -> Connection:
        assert self.login_result is not None
        secure = self.login_result.connector.tls
        return await Connection.open(
            self.login_result.address(self.transport),
            self.login_result.access_token,
            self.transport,
            tls=tls_context(self.ca_file) if secure else None,
            ack_every=self.ack_every,
            ack_delay_ms=self.ack_delay_ms,
            auto_ack=False,  # we ack what we have handed out, see module doc
        )

    async def _run_pump(self, conn: Connection) -> None:
        try:
            async for event in conn.events():
                if isinstance(event, wire_pb2.Message):
                    self.typing.stopped(event.conversation_id, event.sender_id)
                    await self._accept_live(conn, event)
                else:
                    if isinstance(event, wire_pb2.Typing):
                        self.typing.on_typing(event)
                    elif isinstance(event, wire_pb2.Presence):
                        self.presence.on_presence(event)
                    self._out.put_nowait(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("client event pump failed")
            await conn.close()
        finally:
            self._stream_ended(conn)

    def _stream_ended(self, conn: Connection) -> None:
        """The socket is gone: reconnect (when asked to and it makes sense) or end."""
        if self._reconnector is None or self._closing or final_kick(conn.kick):
            self._end()
            return
        reason = conn.close_reason or "connection closed"
        self._reconnecting = asyncio.get_running_loop().create_task(
            self._reconnector.run(reason), name="im-client-reconnect"
        )

    def _end_stream(self, reason: str) -> None:
        self._ended = reason
        self._end()

    # ------------------------------------------------------------------ sending

    def _conn(self) -> Connection:
        if self.connection is None:
            raise ClientError("not connected: call connect() first")
        return self.connection

    async def resolve_user(self, peer: str | int) -> int:
        """A user id from a user id or a username (cached)."""
        if isinstance(peer, int):
            return peer
        if peer in self._user_ids:
            return self._user_ids[peer]
        user = await self.gateway.user_by_name(peer)
        if user is None:
            if peer.isdigit():
                return int(peer)
            raise ApiError(404, "not_found", f"no user named {peer!r}")
        self._user_ids[peer] = int(user["user_id"])
        return self._user_ids[peer]

    async def direct_conversation_with(self, peer: str | int) -> str:
        try:
            return direct_conversation_id(self.user_id, await self.resolve_user(peer))
        except ValueError as exc:  # the peer is this user
            raise ClientError(f"{peer}: {exc}") from None

    async def send_to_user(
        self, peer: str | int, text: str | bytes, content_type: str = "text/plain", **kwargs: Any
    ) -> wire_pb2.SendAck:
        """Send to the 1:1 conversation with ``peer`` (username or user id)."""
        cid = await self.direct_conversation_with(peer)
        return await self.send(cid, text, content_type, **kwargs)

    async def send_to_group(
        self,
        group_id: str | int,
        text: str | bytes,
        content_type: str = "text/plain",
        **kwargs: Any,
    ) -> wire_pb2.SendAck:
        """Send to a group (``7``, ``"7"`` or ``"g:7"``): its id is its conversation id."""
        return await self.send(as_group_id(group_id), text, content_type, **kwargs)

    async def send(
        self,
        conversation_id: str,
        text: str | bytes,
        content_type: str = "text/plain",
        **kwargs: Any,
    ) -> wire_pb2.SendAck:
        """``Connection.send``: kwargs client_msg_id, ack_timeout, attempts,
        attachment_ids."""
        return await self._conn().send(conversation_id, text, content_type, **kwargs)

    async def read(self, conversation_id: str, seq: int) -> None:
        await self._conn().read(conversation_id, seq)

    async def recall(self, conversation_id: str, msg_id: int) -> dict[str, Any]:
        """Recall a message (``GatewayClient.recall``); its recall event reaches every
        member's devices, this one's too, like a message (``im.client.events``)."""
        return await self.gateway.recall(conversation_id, msg_id)

    async def edit(
        self, conversation_id: str, msg_id: int, text: str, client_msg_id: str | None = None
    ) -> dict[str, Any]:
        """Edit one's own text message (``GatewayClient.edit``); pass the same
        ``client_msg_id`` to retry safely (one is made up when none is given)."""
        key = client_msg_id or uuid.uuid4().hex
        return await self.gateway.edit(conversation_id, msg_id, text, key)

    async def send_typing(self, conversation_id: str, started: bool = True) -> None:
        """``Connection.typing``: others see it for expires_in_ms unless refreshed."""
        await self._conn().typing(conversation_id, started)

    def typing_in(self, conversation_id: str) -> list[int]:
        """User ids typing in the conversation now (expired STARTEDs left out)."""
        return self.typing.typing(conversation_id)

    async def conversation_presence(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every other member's ``{user_id, online, last_seen_ms}`` (REST), also
        noted in ``presence`` so later pushes update it."""
        members = await self.gateway.conversation_presence(conversation_id)
        for m in members:
            self.presence.set(int(m["user_id"]), bool(m["online"]), m.get("last_seen_ms"))
        return members

    # ------------------------------------------------------------------ reading

    # ------------------------------------------------------------------ closing

    async def close(self, *, logout: bool = False) -> None:
        self._closing = True
        if self._reconnecting is not None and not self._reconnecting.done():
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconnecting
            self._end()
        if self.connection is not None:
            await self.connection.close()
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
        if logout and self.gateway.token:
            with contextlib.suppress(ApiError):
                await self.gateway.logout()
        await self.gateway.aclose()

    async def __aenter__(self) -> ImClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
