"""The connector's logic, independent of the socket type.

``ConnectorCore`` owns the live connections: authentication, heartbeats, delivery
with retransmit, kicks; the send path (``sendpath.py``) and acks and reads
(``cursors.py``) hang off it. The transports (``transport.py``) feed it decoded
frames; the router calls ``deliver`` through the gRPC servicer at the bottom. All
timing goes through ``tick()`` and an injectable clock, so tests move time instead of
sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import OrderedDict

import grpc

from im import events, logs, tracing
from im.auth import TokenError, TokenVerifier
from im.clock import Clock, SystemClock
from im.config import Settings
from im.fanout import MemberCache
from im.grpcutil import ChannelPool
from im.ids import MsgIdGenerator
from im.ports import Backends, ConnectorInfo
from im.protocol import HEADER
from im.v1 import bus_pb2, connector_pb2, connector_pb2_grpc, wire_pb2
from services.connector import traces
from services.connector.authorizer import Authorizer
from services.connector.conn import (
    Conn,
    ConnectorStats,
    error_payload,
    frame_payload,
    kick_payload,
)
from services.connector.cursors import CursorReports
from services.connector.limits import REFUSED_MESSAGE, WS_POLICY_VIOLATION, UnauthenticatedLimit
from services.connector.presence_notify import Directory, GrpcDirectory, PresenceNotifier
from services.connector.relay import SignalRelay, push_signals
from services.connector.sendpath import SendPath
from services.connector.settings_push import push_settings
from services.connector.timers import RetransmitSchedule, TokenBucket
from services.connector.typing import MEMBER_LIST_MAX_AGE, TypingRelay

__all__ = ["Conn", "ConnectorCore", "ConnectorServicer", "ConnectorStats"]

log = logging.getLogger("im.connector")

E = wire_pb2  # short alias for error codes and frame types
MAX_PENDING_PER_CONNECTION = 2048  # unacked deliveries tracked; older ones wait for sync
PRESENCE_TTL = 90.0
PRESENCE_REFRESH = 30.0


class ConnectorCore:
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        verifier: TokenVerifier,
        clock: Clock | None = None,
        channels: ChannelPool | None = None,
        authorizer: Authorizer | None = None,
        directory: Directory | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.verifier = verifier
        self.clock = clock or SystemClock()
        self.channels = channels or ChannelPool()
        self.connector_id = settings.resolved_connector_id()
        # Node 0 until the app follows the node id it leases from the registry.
        self.ids = MsgIdGenerator(0, self.clock)
        self.authorizer = authorizer or Authorizer(settings, self.channels, self.clock)
        self.stats = ConnectorStats()
        self.sends = SendPath(
            settings, backends, self.authorizer, self.ids, self.clock, self._spawn
        )
        self.cursors = CursorReports(settings, backends, self.authorizer, self.clock, self._spawn)
        self.retransmits = RetransmitSchedule(
            settings.retransmit_timeout, settings.retransmit_attempts
        )
        # Typing and presence: relayed to online devices, never stored.
        self.signals = SignalRelay(backends, self.channels, self.connector_id, self.deliver)
        self.typing = TypingRelay(
            settings,
            self.authorizer,
            MemberCache(settings, self.channels, self.clock, MEMBER_LIST_MAX_AGE),
            self.signals,
            self.clock,
            self._spawn,
        )
        self.presence_notes = PresenceNotifier(
            settings,
            backends,
            directory or GrpcDirectory(settings, self.channels),
            self.signals,
            self.clock,
            self._spawn,
        )
        self._conn_ids = itertools.count(1)
        self.conns: dict[int, Conn] = {}
        self.by_device: dict[tuple[int, str], Conn] = {}
        # conn id -> client address, until AuthOk: the auth deadline and the
        # per-address cap apply.
        self._unauthed: dict[int, str] = {}
        self.unauthenticated = UnauthenticatedLimit(settings.max_unauthenticated_per_address)
        self._background: set[asyncio.Task] = set()
        self.draining = False
        self.info: ConnectorInfo | None = None
        self._presence_instance = ""  # the presence store incarnation last written to
        self._next_presence_refresh = 0.0

    @property
    def publish_failures(self) -> int:
        return self.sends.publish_failures

    # ------------------------------------------------------------- connections

    def new_conn_id(self) -> int:
        return next(self._conn_ids)

    def opened(self, conn: Conn) -> None:
        conn.stats = self.stats
        if not self.unauthenticated.take(conn.peer):
            conn.close_with_reason(E.ERROR_CODE_RATE_LIMITED, REFUSED_MESSAGE, WS_POLICY_VIOLATION)
            return
        self.conns[conn.conn_id] = conn
        self._unauthed[conn.conn_id] = conn.peer
        if self.draining:
            self._kick(conn, E.KICK_REASON_RECONNECT, "connector is draining")

    def closed(self, conn: Conn) -> None:
        """The transport saw the socket close (either side)."""
        conn.closed = True
        if self.conns.pop(conn.conn_id, None) is not None:
            # (Called from the transport's callback: the fields are given, not current.)
            log.debug("connection closed (%s)", conn.peer or "?", extra=conn.log_context)
        self._leave_unauthed(conn.conn_id)
        conn.pending.clear()
        self.sends.drop_queued(conn)
        conn.unverified.clear()
        self.typing.forget_conn(conn)
        self._release_device(conn)

    def _leave_unauthed(self, conn_id: int) -> None:
        """Authenticated or gone: no auth deadline, and a slot free for its address."""
        if conn_id in self._unauthed:
            self.unauthenticated.give_back(self._unauthed.pop(conn_id))

    def _release_device(self, conn: Conn) -> None:
        key = (conn.user_id, conn.device_id)
        if conn.user_id and self.by_device.get(key) is conn:
            del self.by_device[key]
            self.presence_notes.device_gone(*key)
            # Also after a failed auth: presence.connect may have written before it
            # failed. The delete only removes an entry that names this connector.
            self._spawn(self._forget_presence(key))

    async def _forget_presence(self, key: tuple[int, str]) -> None:
        if key not in self.by_device:  # unless the device came back meanwhile
            await self.backends.presence.disconnect(key[0], key[1], self.connector_id)

    def fail(
        self, conn: Conn, code: int, message: str, client_msg_id: str = "", request_id: int = 0
    ) -> None:
        conn.fail(code, message, client_msg_id, request_id)

    def protocol_error(self, conn: Conn, code: int, message: str) -> None:
        """The transport could not decode the stream: answer and drop this connection."""
        self.stats.bad_frames += 1
        conn.fail(code, message)

    # ------------------------------------------------------------------ frames

    def on_frame(self, conn: Conn, frame: wire_pb2.Frame) -> None:
        if conn.closed:
            return
        conn.last_seen = self.clock.monotonic()
        kind = frame.WhichOneof("kind")
        self.stats.frames_in[kind] += 1
        if not conn.authed:
            self._on_unauthed_frame(conn, frame, kind)
        elif kind == "send":
            self.sends.on_send(conn, frame.send, frame.request_id)
        elif kind == "deliver_ack":
            ack = frame.deliver_ack
            self._on_deliver_ack(conn, ack.conversation_id, ack.seq, frame.request_id)
        elif kind == "ping":
            self.stats.pongs += 1
            conn.write(
                frame_payload(
                    request_id=frame.request_id, pong=wire_pb2.Pong(server_ts=self.clock.wall_ms())
                )
            )
        elif kind == "typing":
            self.typing.on_typing(conn, frame.typing, frame.request_id)
        elif kind == "read":
            read = frame.read
            self.cursors.report(
                conn, read.conversation_id, read=read.seq, request_id=frame.request_id
            )
        elif kind == "auth":
            conn.fail(
                E.ERROR_CODE_INVALID_ARGUMENT, "already authenticated", request_id=frame.request_id
            )
        else:
            conn.fail(
                E.ERROR_CODE_INVALID_ARGUMENT,
                f"clients may not send {kind} frames",
                request_id=frame.request_id,
            )

    def _on_unauthed_frame(self, conn: Conn, frame: wire_pb2.Frame, kind: str | None) -> None:
        # Before AuthOk only one Auth is accepted; anything else (a ping flood, a
        # second Auth, a Send that did not wait for AuthOk) ends the connection, so an
        # unauthenticated socket costs the connector one frame of work.
        if kind == "auth" and not conn.auth_started:
            conn.auth_started = True
            self._spawn(self._authenticate(conn, frame.auth.token, frame.request_id))
            return
        message = "wait for AuthOk" if conn.auth_started else "the first frame must be Auth"
        conn.fail(E.ERROR_CODE_AUTH_REQUIRED, message, request_id=frame.request_id)
        self.closed(conn)

    # ---------------------------------------------------------------- auth

    async def _authenticate(self, conn: Conn, token: str, request_id: int) -> None:
        """Either the connection ends fully authenticated (presence recorded, AuthOk
        written) or it is closed: never half-way, whatever a backend does. The auth
        deadline (tick) keeps running until AuthOk, so a hung backend closes it too."""
        try:
            claims = self.verifier.verify(token)
        except TokenError as exc:
            self._refuse(conn, E.ERROR_CODE_AUTH_FAILED, f"invalid token: {exc}", request_id)
            return
        try:
            revoked = await self.backends.sessions.is_revoked(claims.session_id)
            if revoked:
                self._refuse(conn, E.ERROR_CODE_AUTH_FAILED, "the session was revoked", request_id)
                return
            if conn.closed:
                return
            conn.user_id, conn.device_id, conn.session_id = (
                claims.user_id,
                claims.device_id,
                claims.session_id,
            )
            conn.log_context = {
                **conn.log_context,
                "user_id": claims.user_id,
                "device_id": claims.device_id,
            }
            logs.use(conn.log_context)  # this task's own context: the rest of the auth
            self._take_device(conn)
            previous = await self.backends.presence.connect(
                conn.user_id, conn.device_id, self.connector_id, PRESENCE_TTL
            )
        except Exception as exc:
            log.warning("authentication of connection %s failed: %r", conn.conn_id, exc)
            self._refuse(conn, E.ERROR_CODE_UNAVAILABLE, "try again", request_id)
            return
        if conn.closed:  # went away (or timed out) while we were registering it
            self.closed(conn)
            return
        self._admit(conn, request_id)
        if previous and previous != self.connector_id:
            self._spawn(self._kick_remote(previous, conn.user_id, conn.device_id))

    def _take_device(self, conn: Conn) -> None:
        """This connection is now the device's; an older one of it here is kicked.
        Taken before presence is recorded, so closing the older connection does not
        clear the presence this one is about to set."""
        key = (conn.user_id, conn.device_id)
        older = self.by_device.get(key)
        self.by_device[key] = conn
        if older is not None and older is not conn:
            self._kick(
                older, E.KICK_REASON_DEVICE_LOGGED_IN_ELSEWHERE, "this device connected again"
            )
            self.closed(older)

    def _admit(self, conn: Conn, request_id: int) -> None:
        now = self.clock.monotonic()
        s = self.settings
        conn.authed = True
        log.debug("connection authenticated (%s)", conn.peer or "?")
        self._leave_unauthed(conn.conn_id)
        conn.bucket = TokenBucket(s.send_rate_per_second, s.send_burst, now)
        conn.cursor_bucket = TokenBucket(s.cursor_reports_per_second, s.cursor_report_burst, now)
        self.stats.authenticated += 1
        self.presence_notes.device_online(conn.user_id, conn.device_id)
        conn.write(
            frame_payload(
                request_id=request_id,
                auth_ok=wire_pb2.AuthOk(
                    user_id=conn.user_id,
                    device_id=conn.device_id,
                    connector_id=self.connector_id,
                    heartbeat_interval_ms=int(s.heartbeat_interval * 1000),
                    server_ts=self.clock.wall_ms(),
                ),
            )
        )

    def _refuse(self, conn: Conn, code: int, message: str, request_id: int) -> None:
        self.stats.auth_failures += 1
        if not conn.closed:
            self.stats.errors += 1
        conn.close(error_payload(code, message, request_id=request_id))
        self.closed(conn)

    async def _kick_remote(self, connector_id: str, user_id: int, device_id: str) -> None:
        for info in await self.backends.registry.connectors():
            if info.connector_id == connector_id:
                stub = connector_pb2_grpc.ConnectorServiceStub(self.channels.get(info.grpc_addr))
                with contextlib.suppress(grpc.RpcError):
                    await stub.Kick(
                        connector_pb2.KickRequest(
                            user_id=user_id,
                            device_id=device_id,
                            reason=E.KICK_REASON_DEVICE_LOGGED_IN_ELSEWHERE,
                        ),
                        timeout=3,
                    )
                return

    # ----------------------------------------------------------- acks and reads

    def _on_deliver_ack(self, conn: Conn, conversation_id: str, seq: int, request_id: int) -> None:
        pending = conn.pending.get(conversation_id)
        if pending:
            while pending:
                first = next(iter(pending))
                if first > seq:
                    break
                del pending[first]
            if not pending:
                del conn.pending[conversation_id]
        # Delivered here means the router found the user among its members.
        self.cursors.report(
            conn,
            conversation_id,
            delivered=seq,
            request_id=request_id,
            known_member=pending is not None,
        )

    def on_membership(self, event: bus_pb2.MembershipEvent) -> None:
        """A group's members changed: forget cached send permissions for it."""
        if event.added or event.removed:
            self.authorizer.forget(event.conversation_id, [*event.added, *event.removed])
        else:
            self.authorizer.forget(event.conversation_id)
        self.typing.forget_conversation(event.conversation_id)

    async def flush_cursor_reports(self) -> int:
        return await self.cursors.flush()

    # ---------------------------------------------------------------- delivery

    def deliver(self, request: connector_pb2.DeliverRequest) -> connector_pb2.DeliverResponse:
        """Push messages and receipts to the listed devices; report the ones not here."""
        missing: list[connector_pb2.DeviceRef] = []
        pushed = receipts = 0
        now = self.clock.monotonic()
        if request.router_id:
            self.sends.admission.note_lag(request.router_id, request.router_lag_ms, now)
        for delivery in request.deliveries:
            message = delivery.message
            payload = frame_payload(deliver=wire_pb2.Deliver(message=message))  # once per message
            item = (payload, HEADER.pack(len(payload)) + payload)
            conv, seq = message.conversation_id, message.seq
            if message.content_type == events.GROUP_DISSOLVED:
                # Read-only from now on, before a member here sees the event: the
                # membership topic says so too, but may come later.
                self.authorizer.mark_read_only(conv)
            pushed_before = pushed
            for target in delivery.targets:
                conn = self.by_device.get((target.user_id, target.device_id))
                if conn is None or conn.closed or not conn.authed:
                    missing.append(target)  # nothing before AuthOk; it syncs after
                    continue
                conn.write_framed(*item)
                pushed += 1
                pending = conn.pending.get(conv)
                if pending is None:
                    pending = conn.pending[conv] = OrderedDict()
                if seq not in pending:
                    pending[seq] = item
                    if len(pending) > MAX_PENDING_PER_CONNECTION:
                        pending.popitem(last=False)  # it will come by sync
                    self.retransmits.schedule((conn.conn_id, conv, seq), now)
            if tracing.enabled and delivery.traceparent:
                traces.delivered(delivery, pushed - pushed_before)
        for item in request.receipts:
            payload = frame_payload(receipt=item.receipt)
            for target in item.targets:
                conn = self.by_device.get((target.user_id, target.device_id))
                if conn is None or conn.closed or not conn.authed:
                    continue
                conn.write(payload)
                receipts += 1
        signals = push_signals(request.signals, self.by_device) if request.signals else 0
        self.stats.delivered += pushed
        self.stats.receipts += receipts
        self.signals.stats.pushed += signals
        receipts += push_settings(self.by_device, request.settings_changes)
        return connector_pb2.DeliverResponse(missing=missing, pushed=pushed + receipts + signals)

    def kick(self, user_id: int, device_id: str, reason: int, session_id: str = "") -> int:
        if device_id:
            candidates = [self.by_device.get((user_id, device_id))]
        else:
            candidates = [c for (u, _d), c in self.by_device.items() if u == user_id]
        kicked = 0
        for conn in candidates:
            if conn is None or (session_id and conn.session_id != session_id):
                continue
            self._kick(conn, reason, "kicked")
            self.closed(conn)
            kicked += 1
        return kicked

    # ------------------------------------------------------------------ timing

    def tick(self) -> None:
        """Retransmits, auth deadlines and heartbeat timeouts, as of clock.monotonic()."""
        now = self.clock.monotonic()
        for (conn_id, conv, seq), attempt in self.retransmits.due(now):
            conn = self.conns.get(conn_id)
            if conn is None or conn.closed:
                continue
            pending = conn.pending.get(conv)
            item = pending.get(seq) if pending else None
            if item is None:
                continue  # acked meanwhile
            if attempt >= self.retransmits.attempts:
                del pending[seq]
                if not pending:
                    del conn.pending[conv]
                self.stats.gave_up += 1
                continue
            conn.write_framed(*item)
            self.stats.retransmits += 1
            self.retransmits.schedule((conn_id, conv, seq), now, attempt + 1)

        self.presence_notes.tick()
        if self._unauthed:
            deadline = now - self.settings.auth_timeout
            for conn_id in list(self._unauthed):
                conn = self.conns.get(conn_id)
                if conn is None:
                    self._leave_unauthed(conn_id)
                elif conn.created_at <= deadline:
                    self._leave_unauthed(conn_id)
                    self.fail(conn, E.ERROR_CODE_AUTH_TIMEOUT, "not authenticated in time")
                    self.closed(conn)

    def sweep_idle(self) -> int:
        """Close connections silent for heartbeat_misses intervals."""
        now = self.clock.monotonic()
        limit = now - self.settings.heartbeat_interval * self.settings.heartbeat_misses
        idle = [c for c in self.conns.values() if c.last_seen < limit]
        for conn in idle:
            self.fail(conn, E.ERROR_CODE_HEARTBEAT_TIMEOUT, "no frame within the heartbeat window")
            self.closed(conn)
        return len(idle)

    def connection_count(self) -> int:
        return len(self.conns)

    async def refresh_presence(self) -> None:
        entries = [(c.user_id, c.device_id) for c in self.by_device.values() if c.authed]
        if entries:
            await self.backends.presence.refresh(entries, self.connector_id, PRESENCE_TTL)

    async def watch_presence(self) -> None:
        """Called every second. Re-asserts the presence of every connection held here
        when the presence store restarted (its instance changed: a restarted Redis is
        empty, and without this its devices would get nothing live until they
        reconnect) or could not be reached last time; otherwise every
        PRESENCE_REFRESH seconds, well inside the entries' TTL."""
        now = self.clock.monotonic()
        try:
            instance = await self.backends.presence.instance()
            if instance == self._presence_instance and now < self._next_presence_refresh:
                return
            if self._presence_instance not in ("", instance):
                log.warning(
                    "presence store restarted: re-asserting %d devices", len(self.by_device)
                )
            await self.refresh_presence()
        except Exception as exc:
            if self._presence_instance:
                log.warning("presence store unreachable (%r): re-asserting once it is back", exc)
            self._presence_instance = ""  # unknown: re-assert at the next success
            return
        self._presence_instance = instance
        self._next_presence_refresh = now + PRESENCE_REFRESH

    def drain(self) -> None:
        """Ask every client to reconnect elsewhere (SIGTERM)."""
        self.draining = True
        for conn in list(self.conns.values()):
            self._kick(conn, E.KICK_REASON_RECONNECT, "connector is draining")
            self.closed(conn)

    # ------------------------------------------------------------------ helpers

    def _kick(self, conn: Conn, reason: int, detail: str) -> None:
        """End a connection with a Kick frame, counted by reason."""
        if not conn.closed:
            self.stats.kicked(reason)
        conn.close(kick_payload(reason, detail))

    def _spawn(self, coro) -> asyncio.Task:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def wait_background(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


class ConnectorServicer(connector_pb2_grpc.ConnectorServiceServicer):
    def __init__(self, core: ConnectorCore) -> None:
        self._core = core

    async def Deliver(self, request, context):  # type: ignore[no-untyped-def]
        return self._core.deliver(request)

    async def Kick(self, request, context):  # type: ignore[no-untyped-def]
        kicked = self._core.kick(
            request.user_id, request.device_id, request.reason, request.session_id
        )
        return connector_pb2.KickResponse(kicked=kicked)
