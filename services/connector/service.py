"""The connector's logic, independent of the socket type.

``ConnectorCore`` owns the live connections: authentication, heartbeats, the send
path (authorization, msg_id, bus, SendAck), delivery with retransmit, kicks. The
transports (``transport.py``) feed it decoded frames; the router calls ``deliver``
through the gRPC servicer at the bottom. All timing goes through ``tick()`` and an
injectable clock, so tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from im.auth import TokenError, TokenVerifier
from im.clock import Clock, SystemClock
from im.config import Settings
from im.grpcutil import ChannelPool
from im.ids import MsgIdGenerator, is_valid_conversation_id, parse_direct
from im.ports import Backends, ConnectorInfo
from im.protocol import HEADER
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
from services.connector.timers import RetransmitSchedule, TokenBucket

log = logging.getLogger("im.connector")

E = wire_pb2  # short alias for error codes and frame types
_CLOSE_AFTER = {
    E.ERROR_CODE_BAD_FRAME,
    E.ERROR_CODE_FRAME_TOO_LARGE,
    E.ERROR_CODE_AUTH_REQUIRED,
    E.ERROR_CODE_AUTH_FAILED,
    E.ERROR_CODE_AUTH_TIMEOUT,
    E.ERROR_CODE_HEARTBEAT_TIMEOUT,
}
_ACK_PACK = struct.Struct(">Qq")  # msg_id, server_ts: the idempotency record
MAX_PENDING_PER_CONNECTION = 2048  # unacked deliveries tracked; older ones wait for sync
MAX_CLIENT_MSG_ID = 64
MAX_CONTENT_TYPE = 64
PRESENCE_TTL = 90.0


class Conn:
    """One client socket. Transports subclass it with ``_write`` and ``_close``."""

    __slots__ = (
        "authed",
        "bucket",
        "closed",
        "conn_id",
        "created_at",
        "device_id",
        "last_seen",
        "pending",
        "send_queue",
        "send_worker",
        "session_id",
        "user_id",
    )

    def __init__(self, conn_id: int, now: float) -> None:
        self.conn_id = conn_id
        self.created_at = now
        self.last_seen = now
        self.authed = False
        self.closed = False
        self.user_id = 0
        self.device_id = ""
        self.session_id = ""
        self.bucket: TokenBucket | None = None
        # conversation -> seq -> serialised Deliver frame (bare, length-prefixed)
        self.pending: dict[str, OrderedDict[int, tuple[bytes, bytes]]] = {}
        self.send_queue: deque[tuple[int, wire_pb2.Send]] = deque()
        self.send_worker: asyncio.Task | None = None

    # Transports implement these two.
    def _write(self, payload: bytes) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def write(self, payload: bytes) -> None:
        if not self.closed:
            self._write(payload)

    def write_framed(self, payload: bytes, framed: bytes) -> None:
        """Write a frame whose length-prefixed form was built once for many sockets
        (a group message); transports without the prefix use ``payload``."""
        if not self.closed:
            self._write(payload)

    def close(self, last_payload: bytes | None = None) -> None:
        """Write a last frame (Error or Kick), then close once it is flushed."""
        if self.closed:
            return
        if last_payload is not None:
            self._write(last_payload)
        self.closed = True
        self._close()

    def pending_count(self) -> int:
        return sum(len(p) for p in self.pending.values())


@dataclass(slots=True)
class ConnectorStats:
    sends: int = 0
    send_acks: int = 0
    delivered: int = 0
    retransmits: int = 0
    gave_up: int = 0
    bad_frames: int = 0


class Authorizer:
    """May this user write to this conversation? Cached, so the hot path is a dict hit.

    1:1 conversations are created on first send: if the sender is one of the pair and
    the peer exists, the group service creates it.
    """

    def __init__(self, settings: Settings, channels: ChannelPool, clock: Clock) -> None:
        self._settings = settings
        self._channels = channels
        self._clock = clock
        self._cache: dict[tuple[int, str], tuple[bool, float]] = {}
        # Membership events invalidate entries at once; the TTL bounds staleness if
        # an event is missed.
        self.positive_ttl = 30.0
        self.negative_ttl = 5.0

    def _group(self) -> group_pb2_grpc.GroupServiceStub:
        return group_pb2_grpc.GroupServiceStub(self._channels.get(self._settings.group_addr()))

    def _user(self) -> user_pb2_grpc.UserServiceStub:
        return user_pb2_grpc.UserServiceStub(self._channels.get(self._settings.user_addr()))

    def cached(self, user_id: int, conversation_id: str) -> bool | None:
        hit = self._cache.get((user_id, conversation_id))
        if hit is None or hit[1] < self._clock.monotonic():
            return None
        return hit[0]

    def forget(self, conversation_id: str, user_ids: Iterable[int] | None = None) -> None:
        if user_ids is None:
            for key in [k for k in self._cache if k[1] == conversation_id]:
                del self._cache[key]
        else:
            for uid in user_ids:
                self._cache.pop((uid, conversation_id), None)

    async def may_send(self, user_id: int, conversation_id: str) -> bool:
        hit = self.cached(user_id, conversation_id)
        if hit is not None:
            return hit
        allowed = await self._ask(user_id, conversation_id)
        ttl = self.positive_ttl if allowed else self.negative_ttl
        if len(self._cache) > 500_000:
            self._cache.clear()  # bounded memory; it refills from the group service
        self._cache[(user_id, conversation_id)] = (allowed, self._clock.monotonic() + ttl)
        return allowed

    async def _ask(self, user_id: int, conversation_id: str) -> bool:
        reply = await self._group().CheckMember(
            group_pb2.CheckMemberRequest(conversation_id=conversation_id, user_id=user_id),
            timeout=5,
        )
        if reply.is_member:
            return True
        pair = parse_direct(conversation_id)
        if pair is None or user_id not in pair:
            return False
        peer = pair[0] if pair[1] == user_id else pair[1]
        users = await self._user().GetUsers(user_pb2.GetUsersRequest(user_ids=[peer]), timeout=5)
        if not users.users:
            return False
        await self._group().GetOrCreateDirect(
            group_pb2.GetOrCreateDirectRequest(user_a=user_id, user_b=peer), timeout=5
        )
        return True


def _frame(**kind) -> bytes:
    return wire_pb2.Frame(**kind).SerializeToString()


def error_payload(code: int, message: str, client_msg_id: str = "", request_id: int = 0) -> bytes:
    return wire_pb2.Frame(
        request_id=request_id,
        error=wire_pb2.Error(code=code, message=message, client_msg_id=client_msg_id),
    ).SerializeToString()


def kick_payload(reason: int, detail: str) -> bytes:
    return _frame(kick=wire_pb2.Kick(reason=reason, detail=detail))


class ConnectorCore:
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        verifier: TokenVerifier,
        clock: Clock | None = None,
        channels: ChannelPool | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.verifier = verifier
        self.clock = clock or SystemClock()
        self.channels = channels or ChannelPool()
        self.connector_id = settings.resolved_connector_id()
        self.ids = MsgIdGenerator(_node_id(self.connector_id), self.clock)
        self.authorizer = Authorizer(settings, self.channels, self.clock)
        self.stats = ConnectorStats()
        self.retransmits = RetransmitSchedule(
            settings.retransmit_timeout, settings.retransmit_attempts
        )
        self._conn_ids = itertools.count(1)
        self.conns: dict[int, Conn] = {}
        self.by_device: dict[tuple[int, str], Conn] = {}
        self._unauthed: set[int] = set()
        # (user, conversation) -> [delivered_seq, read_seq], flushed to the bus in batches
        self._cursor_reports: dict[tuple[int, str], list[int]] = {}
        self._inflight: dict[str, asyncio.Future] = {}
        self._recent_acks: OrderedDict[str, bytes] = OrderedDict()
        self._background: set[asyncio.Task] = set()
        self.draining = False
        # Consecutive publishes the bus refused: readiness turns NOT_SERVING at 3, so a
        # broker that takes connections but not messages does not look healthy.
        self.publish_failures = 0
        self.info: ConnectorInfo | None = None

    # ------------------------------------------------------------- connections

    def new_conn_id(self) -> int:
        return next(self._conn_ids)

    def opened(self, conn: Conn) -> None:
        self.conns[conn.conn_id] = conn
        self._unauthed.add(conn.conn_id)
        if self.draining:
            conn.close(kick_payload(E.KICK_REASON_RECONNECT, "connector is draining"))

    def closed(self, conn: Conn) -> None:
        """The transport saw the socket close (either side)."""
        conn.closed = True
        self.conns.pop(conn.conn_id, None)
        self._unauthed.discard(conn.conn_id)
        conn.pending.clear()
        conn.send_queue.clear()
        if conn.authed:
            key = (conn.user_id, conn.device_id)
            if self.by_device.get(key) is conn:
                del self.by_device[key]
                self._spawn(self._forget_presence(key))

    async def _forget_presence(self, key: tuple[int, str]) -> None:
        if key not in self.by_device:  # unless the device came back meanwhile
            await self.backends.presence.disconnect(key[0], key[1], self.connector_id)

    def fail(
        self, conn: Conn, code: int, message: str, client_msg_id: str = "", request_id: int = 0
    ) -> None:
        payload = error_payload(code, message, client_msg_id, request_id)
        if code in _CLOSE_AFTER:
            conn.close(payload)
        else:
            conn.write(payload)

    def protocol_error(self, conn: Conn, code: int, message: str) -> None:
        """The transport could not decode the stream: answer and drop this connection."""
        self.stats.bad_frames += 1
        self.fail(conn, code, message)

    # ------------------------------------------------------------------ frames

    def on_frame(self, conn: Conn, frame: wire_pb2.Frame) -> None:
        if conn.closed:
            return
        conn.last_seen = self.clock.monotonic()
        kind = frame.WhichOneof("kind")
        if not conn.authed:
            if kind == "auth" and conn.conn_id in self._unauthed:
                self._unauthed.discard(conn.conn_id)  # one Auth attempt per connection
                self._spawn(self._authenticate(conn, frame.auth.token, frame.request_id))
            elif kind == "ping":
                conn.write(
                    _frame(
                        request_id=frame.request_id,
                        pong=wire_pb2.Pong(server_ts=self.clock.wall_ms()),
                    )
                )
            elif conn.conn_id in self._unauthed:
                self.fail(conn, E.ERROR_CODE_AUTH_REQUIRED, "the first frame must be Auth")
            return
        if kind == "send":
            self._on_send(conn, frame.send, frame.request_id)
        elif kind == "deliver_ack":
            self._on_deliver_ack(conn, frame.deliver_ack.conversation_id, frame.deliver_ack.seq)
        elif kind == "ping":
            conn.write(
                _frame(
                    request_id=frame.request_id, pong=wire_pb2.Pong(server_ts=self.clock.wall_ms())
                )
            )
        elif kind == "read":
            self._on_read(conn, frame.read.conversation_id, frame.read.seq)
        elif kind == "auth":
            self.fail(
                conn,
                E.ERROR_CODE_INVALID_ARGUMENT,
                "already authenticated",
                request_id=frame.request_id,
            )
        else:
            self.fail(
                conn,
                E.ERROR_CODE_INVALID_ARGUMENT,
                f"clients may not send {kind} frames",
                request_id=frame.request_id,
            )

    async def _authenticate(self, conn: Conn, token: str, request_id: int) -> None:
        try:
            claims = self.verifier.verify(token)
        except TokenError as exc:
            self.fail(
                conn, E.ERROR_CODE_AUTH_FAILED, f"invalid token: {exc}", request_id=request_id
            )
            return
        if await self.backends.sessions.is_revoked(claims.session_id):
            self.fail(
                conn, E.ERROR_CODE_AUTH_FAILED, "the session was revoked", request_id=request_id
            )
            return
        if conn.closed:
            return
        conn.user_id, conn.device_id, conn.session_id = (
            claims.user_id,
            claims.device_id,
            claims.session_id,
        )
        conn.authed = True
        conn.bucket = TokenBucket(
            self.settings.send_rate_per_second, self.settings.send_burst, self.clock.monotonic()
        )
        key = (conn.user_id, conn.device_id)
        older = self.by_device.get(key)
        # Take the slot first, so closing the older connection does not clear the
        # device's presence that this connection is about to set.
        self.by_device[key] = conn
        if older is not None and older is not conn:
            older.close(
                kick_payload(
                    E.KICK_REASON_DEVICE_LOGGED_IN_ELSEWHERE, "this device connected again"
                )
            )
            self.closed(older)
        previous = await self.backends.presence.connect(
            conn.user_id, conn.device_id, self.connector_id, PRESENCE_TTL
        )
        if previous and previous != self.connector_id:
            self._spawn(self._kick_remote(previous, conn.user_id, conn.device_id))
        if conn.closed:  # went away while we were registering it
            if self.by_device.get(key) is conn:
                self.closed(conn)
            return
        conn.write(
            _frame(
                request_id=request_id,
                auth_ok=wire_pb2.AuthOk(
                    user_id=conn.user_id,
                    device_id=conn.device_id,
                    connector_id=self.connector_id,
                    heartbeat_interval_ms=int(self.settings.heartbeat_interval * 1000),
                    server_ts=self.clock.wall_ms(),
                ),
            )
        )

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

    # -------------------------------------------------------------------- send

    def _on_send(self, conn: Conn, send: wire_pb2.Send, request_id: int) -> None:
        self.stats.sends += 1
        cid = send.client_msg_id
        if conn.bucket is not None and not conn.bucket.take(self.clock.monotonic()):
            self.fail(conn, E.ERROR_CODE_RATE_LIMITED, "send rate exceeded", cid, request_id)
            return
        if not cid or len(cid) > MAX_CLIENT_MSG_ID:
            self.fail(
                conn,
                E.ERROR_CODE_INVALID_ARGUMENT,
                f"client_msg_id must be 1..{MAX_CLIENT_MSG_ID} characters",
                cid,
                request_id,
            )
            return
        if not is_valid_conversation_id(send.conversation_id):
            self.fail(
                conn,
                E.ERROR_CODE_INVALID_ARGUMENT,
                f"malformed conversation_id {send.conversation_id[:80]!r}",
                cid,
                request_id,
            )
            return
        if len(send.body) > self.settings.max_body_bytes:
            self.fail(
                conn,
                E.ERROR_CODE_BODY_TOO_LARGE,
                f"body exceeds {self.settings.max_body_bytes} bytes",
                cid,
                request_id,
            )
            return
        if len(send.content_type) > MAX_CONTENT_TYPE:
            self.fail(conn, E.ERROR_CODE_INVALID_ARGUMENT, "content_type too long", cid, request_id)
            return
        conn.send_queue.append((request_id, send))
        if conn.send_worker is None:
            conn.send_worker = self._spawn(self._drain_sends(conn))

    async def _drain_sends(self, conn: Conn) -> None:
        # One worker per connection while it has sends queued: keeps the connection's
        # messages in order and lets a pipelining client be served in batches.
        try:
            while conn.send_queue and not conn.closed:
                batch = list(conn.send_queue)
                conn.send_queue.clear()
                await self._send_batch(conn, batch)
        except Exception:
            log.exception("send path failed")
            for request_id, send in conn.send_queue:
                self.fail(
                    conn, E.ERROR_CODE_INTERNAL, "internal error", send.client_msg_id, request_id
                )
            conn.send_queue.clear()
        finally:
            conn.send_worker = None

    async def _send_batch(self, conn: Conn, batch: list[tuple[int, wire_pb2.Send]]) -> None:
        to_publish: list[tuple[int, wire_pb2.Send, str, int, int]] = []
        waits: list[tuple[int, wire_pb2.Send, asyncio.Future]] = []
        for request_id, send in batch:
            cid = send.client_msg_id
            try:
                allowed = await self.authorizer.may_send(conn.user_id, send.conversation_id)
            except grpc.RpcError as exc:
                log.warning("authorization lookup failed: %s", exc)
                self.fail(conn, E.ERROR_CODE_UNAVAILABLE, "try again", cid, request_id)
                continue
            if not allowed:
                self.fail(
                    conn,
                    E.ERROR_CODE_FORBIDDEN,
                    f"not a member of {send.conversation_id}",
                    cid,
                    request_id,
                )
                continue
            key = f"{conn.user_id}:{cid}"
            recent = self._recent_acks.get(key)
            if recent is not None:
                self._reply_ack(conn, request_id, send, recent)
                continue
            inflight = self._inflight.get(key)
            if inflight is not None:
                waits.append((request_id, send, inflight))
                continue
            msg_id = self.ids.next_id()
            ts = self.clock.wall_ms()
            record = _ACK_PACK.pack(msg_id, ts)
            existing = await self.backends.idempotency.claim(
                key, record, self.settings.idempotency_ttl_seconds
            )
            if existing is not None:
                # Seen before (perhaps through another connector): publish again under
                # the same msg_id; the router stores and numbers a msg_id only once.
                msg_id, ts = _ACK_PACK.unpack(existing)
            self._inflight[key] = asyncio.get_running_loop().create_future()
            to_publish.append((request_id, send, key, msg_id, ts))

        if to_publish:
            records = []
            for _request_id, send, _key, msg_id, ts in to_publish:
                message = wire_pb2.Message(
                    msg_id=msg_id,
                    conversation_id=send.conversation_id,
                    sender_id=conn.user_id,
                    sender_device=conn.device_id,
                    client_msg_id=send.client_msg_id,
                    content_type=send.content_type,
                    body=send.body,
                    server_ts=ts,
                )
                records.append(
                    (
                        send.conversation_id,
                        bus_pb2.InboundMessage(message=message).SerializeToString(),
                    )
                )
            try:
                await self.backends.bus.publish_many(self.settings.topic_messages, records)
                ok = True
                self.publish_failures = 0
            except Exception as exc:
                log.warning("bus refused %d messages: %s", len(records), exc)
                ok = False
                self.publish_failures += 1
            for request_id, send, key, msg_id, ts in to_publish:
                future = self._inflight.pop(key)
                if ok:
                    record = _ACK_PACK.pack(msg_id, ts)
                    self._remember_ack(key, record)
                    future.set_result(record)
                    self._reply_ack(conn, request_id, send, record)
                else:
                    # Keep the claim: part of the batch may have reached the bus, so the
                    # client's retry must go out under the same msg_id (stored once).
                    future.set_result(None)
                    self.fail(
                        conn,
                        E.ERROR_CODE_UNAVAILABLE,
                        "message bus unavailable, retry",
                        send.client_msg_id,
                        request_id,
                    )

        for request_id, send, future in waits:
            record = await future
            if record is None:
                self.fail(
                    conn,
                    E.ERROR_CODE_UNAVAILABLE,
                    "message bus unavailable, retry",
                    send.client_msg_id,
                    request_id,
                )
            else:
                self._reply_ack(conn, request_id, send, record)

    def _remember_ack(self, key: str, record: bytes) -> None:
        self._recent_acks[key] = record
        if len(self._recent_acks) > 100_000:
            self._recent_acks.popitem(last=False)

    def _reply_ack(self, conn: Conn, request_id: int, send: wire_pb2.Send, record: bytes) -> None:
        msg_id, ts = _ACK_PACK.unpack(record)
        self.stats.send_acks += 1
        conn.write(
            _frame(
                request_id=request_id,
                send_ack=wire_pb2.SendAck(
                    client_msg_id=send.client_msg_id,
                    msg_id=msg_id,
                    server_ts=ts,
                    conversation_id=send.conversation_id,
                ),
            )
        )

    # ----------------------------------------------------------- acks and reads

    def _on_deliver_ack(self, conn: Conn, conversation_id: str, seq: int) -> None:
        pending = conn.pending.get(conversation_id)
        if pending:
            while pending:
                first = next(iter(pending))
                if first > seq:
                    break
                del pending[first]
            if not pending:
                del conn.pending[conversation_id]
        self._report_cursor(conn.user_id, conversation_id, delivered=seq)

    def _on_read(self, conn: Conn, conversation_id: str, seq: int) -> None:
        if not is_valid_conversation_id(conversation_id):
            self.fail(conn, E.ERROR_CODE_INVALID_ARGUMENT, "malformed conversation_id")
            return
        self._report_cursor(conn.user_id, conversation_id, read=seq)

    def _report_cursor(
        self, user_id: int, conversation_id: str, delivered: int = 0, read: int = 0
    ) -> None:
        if not conversation_id or len(conversation_id) > 64:
            return
        entry = self._cursor_reports.get((user_id, conversation_id))
        if entry is None:
            self._cursor_reports[(user_id, conversation_id)] = [delivered, read]
        else:
            entry[0] = max(entry[0], delivered)
            entry[1] = max(entry[1], read)

    def on_membership(self, event: bus_pb2.MembershipEvent) -> None:
        """A group's members changed: forget cached send permissions for it."""
        if event.added or event.removed:
            self.authorizer.forget(event.conversation_id, [*event.added, *event.removed])
        else:
            self.authorizer.forget(event.conversation_id)

    async def flush_cursor_reports(self) -> int:
        """Publish the coalesced acks and reads (many acks -> one record per member)."""
        if not self._cursor_reports:
            return 0
        reports, self._cursor_reports = self._cursor_reports, {}
        records = [
            (
                conv,
                bus_pb2.CursorReport(
                    conversation_id=conv, user_id=uid, delivered_seq=d, read_seq=r
                ).SerializeToString(),
            )
            for (uid, conv), (d, r) in reports.items()
        ]
        try:
            await self.backends.bus.publish_many(self.settings.topic_cursors, records)
        except Exception as exc:
            log.warning("could not publish %d cursor reports: %s", len(records), exc)
            for (uid, conv), (d, r) in reports.items():  # keep them for the next flush
                self._report_cursor(uid, conv, d, r)
            return 0
        return len(records)

    # ---------------------------------------------------------------- delivery

    def deliver(self, request: connector_pb2.DeliverRequest) -> connector_pb2.DeliverResponse:
        """Push messages and receipts to the listed devices; report the ones not here."""
        missing: list[connector_pb2.DeviceRef] = []
        pushed = 0
        now = self.clock.monotonic()
        for delivery in request.deliveries:
            message = delivery.message
            payload = _frame(deliver=wire_pb2.Deliver(message=message))  # once per message
            item = (payload, HEADER.pack(len(payload)) + payload)
            conv, seq = message.conversation_id, message.seq
            for target in delivery.targets:
                conn = self.by_device.get((target.user_id, target.device_id))
                if conn is None or conn.closed:
                    missing.append(target)
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
        for item in request.receipts:
            payload = _frame(receipt=item.receipt)
            for target in item.targets:
                conn = self.by_device.get((target.user_id, target.device_id))
                if conn is None or conn.closed:
                    continue
                conn.write(payload)
                pushed += 1
        self.stats.delivered += pushed
        return connector_pb2.DeliverResponse(missing=missing, pushed=pushed)

    def kick(self, user_id: int, device_id: str, reason: int, session_id: str = "") -> int:
        if device_id:
            candidates = [self.by_device.get((user_id, device_id))]
        else:
            candidates = [c for (u, _d), c in self.by_device.items() if u == user_id]
        kicked = 0
        for conn in candidates:
            if conn is None or (session_id and conn.session_id != session_id):
                continue
            conn.close(kick_payload(reason, "kicked"))
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

        if self._unauthed:
            deadline = now - self.settings.auth_timeout
            for conn_id in list(self._unauthed):
                conn = self.conns.get(conn_id)
                if conn is None:
                    self._unauthed.discard(conn_id)
                elif conn.created_at <= deadline:
                    self._unauthed.discard(conn_id)
                    self.fail(conn, E.ERROR_CODE_AUTH_TIMEOUT, "no Auth frame in time")
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
        entries = [(c.user_id, c.device_id) for c in self.by_device.values()]
        if entries:
            await self.backends.presence.refresh(entries, self.connector_id, PRESENCE_TTL)

    def drain(self) -> None:
        """Ask every client to reconnect elsewhere (SIGTERM)."""
        self.draining = True
        for conn in list(self.conns.values()):
            conn.close(kick_payload(E.KICK_REASON_RECONNECT, "connector is draining"))
            self.closed(conn)

    # ------------------------------------------------------------------ helpers

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


def _node_id(connector_id: str) -> int:
    from im.ids import node_id_for

    return node_id_for(connector_id)


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
