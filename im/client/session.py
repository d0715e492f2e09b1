"""High-level client: login, connect, sync, send, and one ordered message stream.

What ``ImClient`` promises its user (DESIGN.md "at least once on the wire, exactly
once on the screen"):

- every message of every conversation appears once in ``events()``/``messages()``,
  whether it came live on the socket or was pulled from history by sync;
- per conversation in seq order: a live message that skips seqs first pulls the gap
  from the history endpoint;
- a message is acknowledged (DeliverAck for live ones, REST ack for synced ones) only
  once it has been handed to the stream, so the server's delivered cursor never runs
  ahead of what this client really holds.

The socket is opened before syncing (nothing sent in between is missed) and the live
messages that arrive meanwhile wait in the connection's queue until sync is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from im.client.connection import Connection, Event, SeenIds, Transport
from im.client.errors import ApiError, AuthError, ClientError, ConnectionClosed
from im.client.gateway import GatewayClient, LoginResult, as_group_id
from im.client.transports import tls_context
from im.ids import direct_conversation_id
from im.v1 import wire_pb2

log = logging.getLogger("im.client")

_END = object()


class ImClient:
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
    ) -> None:
        """``ca_file``: the CA that signed the gateway's and connectors' certificates,
        when they serve TLS with a private or development CA."""
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
        self._emitted = SeenIds(dedupe_size)
        self._cursor: dict[str, int] = {}  # highest seq handed out, per conversation
        self._synced = False
        self._dropped = 0  # duplicates caught here (sync/live overlap)
        self._out: asyncio.Queue[object] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._user_ids: dict[str, int] = {}

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
        return self.connection.close_reason if self.connection else None

    def cursor(self, conversation_id: str) -> int:
        """Highest seq of ``conversation_id`` this client has handed out."""
        return self._cursor.get(conversation_id, 0)

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
        if self.connection is not None and not self.connection.closed:
            raise ClientError("already connected")
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
        leftover, self._out = self._out, asyncio.Queue()
        while not leftover.empty():
            item = leftover.get_nowait()
            if item is not _END:
                self._out.put_nowait(item)
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
        if sync:
            try:
                await self.sync()
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

    async def sync(self) -> int:
        """Pull what was missed in every conversation into the stream; count of new messages."""
        pulled = 0
        for conv in await self.gateway.sync():
            cid = conv["conversation_id"]
            base = max(self._cursor.get(cid, 0), int(conv.get("delivered_seq") or 0))
            self._cursor[cid] = base
            if int(conv.get("last_seq") or 0) <= base:
                continue
            pulled += await self._pull(cid, base, None)
        self._synced = True
        return pulled

    async def _pull(self, cid: str, after_seq: int, until_seq: int | None) -> int:
        """Emit history after ``after_seq`` (up to ``until_seq``) and REST-ack it."""
        count = 0
        async for message in self.gateway.history_all(cid, after_seq, until_seq=until_seq):
            if self._emit(message):
                count += 1
        top = self._cursor.get(cid, 0)
        if top > after_seq:
            await self.gateway.ack(cid, top)
        return count

    def _emit(self, message: wire_pb2.Message) -> bool:
        if not self._emitted.add(message.msg_id):
            self._dropped += 1
            return False
        cid = message.conversation_id
        self._cursor[cid] = max(self._cursor.get(cid, 0), message.seq)
        self._out.put_nowait(message)
        return True

    async def _run_pump(self, conn: Connection) -> None:
        try:
            async for event in conn.events():
                if isinstance(event, wire_pb2.Message):
                    await self._accept_live(conn, event)
                else:
                    self._out.put_nowait(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("client event pump failed")
            await conn.close()
        finally:
            self._out.put_nowait(_END)

    async def _accept_live(self, conn: Connection, message: wire_pb2.Message) -> None:
        cid = message.conversation_id
        if cid not in self._cursor and not self._synced:
            self._cursor[cid] = message.seq - 1  # no sync: history starts here
        base = self._cursor.get(cid, 0)  # a conversation new since sync starts at 0
        if message.seq > base + 1:
            try:
                await self._pull(cid, base, message.seq - 1)
            except ApiError as exc:
                # e.g. history before we joined the group is not ours to see
                log.warning("could not pull %s after seq %d: %s", cid, base, exc)
        if not self._emit(message):
            # already handed out (it came by sync): make sure the connector stops resending
            await conn.ack(cid, self._cursor.get(cid, 0))
            return
        await conn.ack(cid, self._cursor[cid])

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
        return direct_conversation_id(self.user_id, await self.resolve_user(peer))

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
        """``Connection.send``: kwargs client_msg_id, ack_timeout, attempts."""
        return await self._conn().send(conversation_id, text, content_type, **kwargs)

    async def read(self, conversation_id: str, seq: int) -> None:
        await self._conn().read(conversation_id, seq)

    # ------------------------------------------------------------------ reading

    async def events(self) -> AsyncIterator[Event]:
        """Messages (sync + live, once each), Receipts and Kicks until the connection ends."""
        while True:
            item = await self._out.get()
            if item is _END:
                self._out.put_nowait(_END)
                return
            yield item  # type: ignore[misc]

    async def messages(self) -> AsyncIterator[wire_pb2.Message]:
        async for event in self.events():
            if isinstance(event, wire_pb2.Message):
                yield event

    # ------------------------------------------------------------------ closing

    async def close(self, *, logout: bool = False) -> None:
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
