"""The send path: validate a Send, authorize it, give it a msg_id (idempotent per
user and client_msg_id), publish it to the bus, and answer.

Every Send gets exactly one answer, SendAck or an Error frame, whatever a backend
raises or however long it hangs (each call has a deadline). An answer is owed from
the moment a Send is queued; the code below settles it per item, and a ``finally``
settles whatever an unexpected error left open, so no in-flight entry outlives its
batch and a retry with the same client_msg_id is always handled afresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from im import attachments, events, tracing
from im.clock import Clock
from im.config import Settings
from im.ids import MsgIdGenerator, is_valid_conversation_id
from im.metrics import Distribution
from im.ports import Backends
from im.sending import ACK_RECORD, client_msg_id_problem, idempotency_key
from im.v1 import bus_pb2, wire_pb2
from services.connector import traces
from services.connector.admission import Admission
from services.connector.authorizer import Authorizer
from services.connector.conn import Conn, frame_payload
from services.connector.publisher import Publisher
from services.connector.replay import ReplayWindow

log = logging.getLogger("im.connector")

E = wire_pb2
MAX_CONTENT_TYPE = 64
RECENT_ACKS = 100_000
REPLAY_MAX_RECORDS = 200_000
REPUBLISH_CHUNK = 500
REPUBLISH_ATTEMPTS = 5
BUSY_MESSAGE = "overloaded: send again after retry_after_ms"

Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task]


@dataclass(slots=True)
class Accepted:
    """A Send that passed the checks and holds its msg_id, waiting for the bus."""

    request_id: int
    send: wire_pb2.Send
    key: str  # user:client_msg_id
    msg_id: int
    server_ts: int
    future: asyncio.Future  # the ack record, or None if it failed; others may wait on it
    received_at: float  # clock.monotonic() when the Send arrived
    span: Any = None  # its "connector send" span, only when traces are recorded


@dataclass(slots=True)
class SendStats:
    sends: int = 0
    send_acks: int = 0
    send_errors: int = 0
    # Seconds from a Send's arrival to its SendAck being written.
    ack_seconds: Distribution = field(default_factory=Distribution)


# (request_id, Send, arrival time, the future of the identical Send in flight)
Wait = tuple[int, wire_pb2.Send, float, asyncio.Future]


class SendPath:
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        authorizer: Authorizer,
        ids: MsgIdGenerator,
        clock: Clock,
        spawn: Spawn,
    ) -> None:
        self._settings = settings
        self._backends = backends
        self.authorizer = authorizer
        self._ids = ids
        self._clock = clock
        self._spawn = spawn
        self.stats = SendStats()
        self._inflight: dict[str, asyncio.Future] = {}
        self.recent_acks: OrderedDict[str, bytes] = OrderedDict()
        self._replay = ReplayWindow(settings.replay_window_seconds, REPLAY_MAX_RECORDS)
        self.admission = Admission(settings.max_inflight_sends, settings.max_router_lag_ms)
        self._publisher = Publisher(lambda: backends.bus, settings.topic_messages, spawn)
        # Consecutive publishes the bus refused: readiness turns NOT_SERVING at 3, so a
        # broker that takes connections but not messages does not look healthy.
        self.publish_failures = 0

    # ------------------------------------------------------------------ intake

    def on_send(self, conn: Conn, send: wire_pb2.Send, request_id: int) -> None:
        self.stats.sends += 1
        problem = self._check(conn, send)
        if problem is not None:
            self._fail(conn, problem[0], problem[1], send, request_id)
            return
        retry_after = self.admission.retry_after_ms(self._clock.monotonic())
        if retry_after is not None:
            self.stats.send_errors += 1
            conn.fail(E.ERROR_CODE_BUSY, BUSY_MESSAGE, send.client_msg_id, request_id, retry_after)
            return
        conn.send_queue.append((request_id, send, self._clock.monotonic()))
        self.admission.inflight += 1
        if conn.send_worker is None:
            conn.send_worker = self._spawn(self._drain(conn))

    def _check(self, conn: Conn, send: wire_pb2.Send) -> tuple[int, str] | None:
        """What is wrong with this Send by itself, as (error code, message)."""
        if conn.bucket is not None and not conn.bucket.take(self._clock.monotonic()):
            return E.ERROR_CODE_RATE_LIMITED, "send rate exceeded"
        problem = client_msg_id_problem(send.client_msg_id)
        if problem is not None:
            return E.ERROR_CODE_INVALID_ARGUMENT, problem
        if not is_valid_conversation_id(send.conversation_id):
            return E.ERROR_CODE_INVALID_ARGUMENT, (
                f"malformed conversation_id {send.conversation_id[:80]!r}"
            )
        if len(send.body) > self._settings.max_body_bytes:
            return E.ERROR_CODE_BODY_TOO_LARGE, (
                f"body exceeds {self._settings.max_body_bytes} bytes"
            )
        if len(send.content_type) > MAX_CONTENT_TYPE:
            return E.ERROR_CODE_INVALID_ARGUMENT, "content_type too long"
        if events.is_reserved(send.content_type):
            return E.ERROR_CODE_INVALID_ARGUMENT, (
                f"content_type {events.RESERVED_PREFIX}* is reserved for server events"
            )
        if send.attachment_ids:
            problem = attachments.check_ids(
                send.attachment_ids, self._settings.max_attachments_per_message
            )
            if problem is not None:
                return E.ERROR_CODE_INVALID_ARGUMENT, problem
        return None

    async def _drain(self, conn: Conn) -> None:
        # One worker per connection while it has sends queued: keeps the connection's
        # messages in order and lets a pipelining client be served in batches.
        try:
            while conn.send_queue and not conn.closed:
                batch = list(conn.send_queue)
                conn.send_queue.clear()
                try:
                    await self._send_batch(conn, batch)
                finally:
                    self.admission.inflight -= len(batch)
        finally:
            conn.send_worker = None
            for request_id, send, _ in conn.send_queue:  # only if the worker itself failed
                self._fail(conn, E.ERROR_CODE_INTERNAL, "internal error", send, request_id)
            self.drop_queued(conn)

    def drop_queued(self, conn: Conn) -> None:
        """Forget the Sends a connection still has queued (it closed, or failed)."""
        self.admission.inflight -= len(conn.send_queue)
        conn.send_queue.clear()

    # ------------------------------------------------------------------- batch

    async def _send_batch(self, conn: Conn, batch: list[tuple[int, wire_pb2.Send, float]]) -> None:
        accepted: list[Accepted] = []
        waits: list[Wait] = []
        try:
            for request_id, send, received_at in batch:
                try:
                    item = await self._admit(conn, request_id, send, received_at, waits)
                except Exception:
                    log.exception(
                        "send path failed", extra={"conversation_id": send.conversation_id}
                    )
                    self._fail(conn, E.ERROR_CODE_INTERNAL, "internal error", send, request_id)
                    continue
                if item is not None:
                    accepted.append(item)
            claimed = await self._claim_all(conn, accepted)
            if claimed:
                await self._publish(conn, claimed)
        finally:
            # Settle what cancellation left open: the client gets an answer and a retry
            # of the same client_msg_id is not parked on a dead future.
            for item in accepted:
                if not item.future.done():
                    self._settle(conn, item, None)
        for request_id, send, received_at, future in waits:
            try:
                record = await future
            except Exception:
                record = None
            self._answer(conn, request_id, send, record, received_at)

    async def _admit(
        self,
        conn: Conn,
        request_id: int,
        send: wire_pb2.Send,
        received_at: float,
        waits: list[Wait],
    ) -> Accepted | None:
        """Authorize one Send and give it a msg_id (its claim comes next, for the whole
        batch at once); answers it itself unless it is returned (to claim and publish)
        or parked on an identical Send already in flight."""
        try:
            # A dict hit on the hot path; a lookup (each RPC with its deadline) otherwise.
            allowed = self.authorizer.cached_send(conn.user_id, send.conversation_id)
            if allowed is None:
                allowed = await self.authorizer.may_send(conn.user_id, send.conversation_id)
        except Exception as exc:
            log.warning(
                "authorization lookup failed: %r",
                exc,
                extra={"conversation_id": send.conversation_id},
            )
            self._fail(conn, E.ERROR_CODE_UNAVAILABLE, "try again", send, request_id)
            return None
        if not allowed:
            # Neutral: a blocked sender is not told of the block.
            message = f"you cannot send to {send.conversation_id}"
            if self.authorizer.is_read_only(send.conversation_id):
                message = f"{send.conversation_id} is dissolved: it is read-only"
            self._fail(conn, E.ERROR_CODE_FORBIDDEN, message, send, request_id)
            return None
        key = idempotency_key(conn.user_id, send.client_msg_id)
        recent = self.recent_acks.get(key)
        if recent is not None:
            self._reply_ack(conn, request_id, send, recent, received_at)
            return None
        inflight = self._inflight.get(key)
        if inflight is not None:
            waits.append((request_id, send, received_at, inflight))
            return None
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        msg_id, ts = self._ids.next_id(), self._clock.wall_ms()
        item = Accepted(request_id, send, key, msg_id, ts, future, received_at)
        if tracing.enabled:
            item.span = traces.send_span(conn, send)
        return item

    async def _claim_all(self, conn: Conn, accepted: list[Accepted]) -> list[Accepted]:
        """Claims each accepted Send's msg_id; returns those to publish. A key seen
        before (perhaps through another connector) keeps its first msg_id: the router
        stores and numbers a msg_id only once. The batch's claims go in one round trip;
        if that fails, one at a time, so a failure fails only its own Send."""
        ttl = self._settings.idempotency_ttl_seconds
        records = [ACK_RECORD.pack(item.msg_id, item.server_ts) for item in accepted]
        if not accepted:
            return []
        try:
            # Bounded by the adapter (Redis: its socket timeout), like every port call.
            found = await self._backends.idempotency.claim_many(
                [(item.key, record) for item, record in zip(accepted, records, strict=True)], ttl
            )
        except Exception as exc:
            log.warning("idempotency claims failed (%r); claiming one at a time", exc)
            return await self._claim_each(conn, accepted, records, ttl)
        return [
            self._keep_first(item, existing) for item, existing in zip(accepted, found, strict=True)
        ]

    async def _claim_each(
        self, conn: Conn, accepted: list[Accepted], records: list[bytes], ttl: float
    ) -> list[Accepted]:
        claimed = []
        for item, record in zip(accepted, records, strict=True):
            try:
                existing = await self._backends.idempotency.claim(item.key, record, ttl)
            except Exception as exc:
                log.warning("idempotency claim failed: %r", exc, extra=_fields(item))
                self._settle_failed(conn, item, "try again")
                continue
            claimed.append(self._keep_first(item, existing))
        return claimed

    @staticmethod
    def _keep_first(item: Accepted, existing: bytes | None) -> Accepted:
        if existing is not None:
            item.msg_id, item.server_ts = ACK_RECORD.unpack(existing)
        return item

    async def _publish(self, conn: Conn, accepted: list[Accepted]) -> None:
        records = [
            (item.send.conversation_id, _inbound(conn, item).SerializeToString())
            for item in accepted
        ]
        epoch = self._backends.bus.epoch
        try:
            async with asyncio.timeout(self._settings.publish_timeout):
                await self._publisher.publish(records)
        except Exception as exc:
            log.warning("bus refused %d messages: %r", len(records), exc)
            self.publish_failures += 1
            # Keep the claims: part of the batch may have reached the bus, so a retry
            # must go out under the same msg_id (stored once).
            for item in accepted:
                self._settle(conn, item, None)
            return
        self.publish_failures = 0
        for item in accepted:
            record = ACK_RECORD.pack(item.msg_id, item.server_ts)
            self._remember_ack(item.key, record)
            self._settle(conn, item, record)
        self._keep_for_replay(records, epoch)

    def _keep_for_replay(self, records: list[tuple[str, bytes]], sent_in_epoch: int) -> None:
        """Keeps acked ``records`` a while; publishes the kept ones again once the bus
        says it lost acknowledged records. ``sent_in_epoch``: the bus epoch when they
        were handed to it."""
        self._replay.add(records, self._clock.monotonic())
        now = self._backends.bus.epoch
        lost = self._replay.lost_since(now)
        if not lost and sent_in_epoch != now:
            # Sent before the loss was seen, acked after another publish had replayed
            # the window: the ack may be a broker's answer to a producer id it gave
            # someone else since, which it can take for a duplicate and not write.
            lost = records
        if lost:
            log.warning(
                "the bus may have lost acknowledged records: publishing the last %d again",
                len(lost),
            )
            self._spawn(self._republish(lost))

    async def _republish(self, records: list[tuple[str, bytes]]) -> None:
        topic = self._settings.topic_messages
        for start in range(0, len(records), REPUBLISH_CHUNK):
            chunk = records[start : start + REPUBLISH_CHUNK]
            for attempt in range(REPUBLISH_ATTEMPTS):
                try:
                    await self._backends.bus.publish_many(topic, chunk)
                    break
                except Exception as exc:
                    log.warning("publishing %d kept messages again failed: %r", len(chunk), exc)
                    await asyncio.sleep(min(5.0, 0.5 * 2**attempt))

    def _settle_failed(self, conn: Conn, item: Accepted, message: str) -> None:
        """Ends an accepted Send with UNAVAILABLE before it reached the bus; Sends parked
        on it are answered the same way."""
        self._resolve(item, None)
        self._fail(conn, E.ERROR_CODE_UNAVAILABLE, message, item.send, item.request_id)

    def _settle(self, conn: Conn, item: Accepted, record: bytes | None) -> None:
        self._resolve(item, record)
        self._answer(conn, item.request_id, item.send, record, item.received_at)

    def _resolve(self, item: Accepted, record: bytes | None) -> None:
        """Takes the Send out of flight and hands its outcome to the Sends parked on it."""
        if self._inflight.get(item.key) is item.future:
            del self._inflight[item.key]
        if not item.future.done():
            item.future.set_result(record)
        if item.span is not None:
            traces.settled(item.span, record is not None)
            item.span = None

    # ---------------------------------------------------------------- answers

    def _answer(
        self,
        conn: Conn,
        request_id: int,
        send: wire_pb2.Send,
        record: bytes | None,
        received_at: float,
    ) -> None:
        if record is None:
            message = "message bus unavailable, retry"
            self._fail(conn, E.ERROR_CODE_UNAVAILABLE, message, send, request_id)
        else:
            self._reply_ack(conn, request_id, send, record, received_at)

    def _fail(
        self, conn: Conn, code: int, message: str, send: wire_pb2.Send, request_id: int
    ) -> None:
        self.stats.send_errors += 1
        conn.fail(code, message, send.client_msg_id, request_id)

    def _remember_ack(self, key: str, record: bytes) -> None:
        self.recent_acks[key] = record
        if len(self.recent_acks) > RECENT_ACKS:
            self.recent_acks.popitem(last=False)

    def _reply_ack(
        self,
        conn: Conn,
        request_id: int,
        send: wire_pb2.Send,
        record: bytes,
        received_at: float,
    ) -> None:
        msg_id, ts = ACK_RECORD.unpack(record)
        if not conn.closed:  # a SendAck is written
            self.stats.send_acks += 1
            self.stats.ack_seconds.observe(self._clock.monotonic() - received_at)
        conn.write(
            frame_payload(
                request_id=request_id,
                send_ack=wire_pb2.SendAck(
                    client_msg_id=send.client_msg_id,
                    msg_id=msg_id,
                    server_ts=ts,
                    conversation_id=send.conversation_id,
                ),
            )
        )


def _fields(item: Accepted) -> dict[str, object]:
    return {"conversation_id": item.send.conversation_id, "msg_id": item.msg_id}


def _inbound(conn: Conn, item: Accepted) -> bus_pb2.InboundMessage:
    send = item.send
    inbound = bus_pb2.InboundMessage(
        message=wire_pb2.Message(
            msg_id=item.msg_id,
            conversation_id=send.conversation_id,
            sender_id=conn.user_id,
            sender_device=conn.device_id,
            client_msg_id=send.client_msg_id,
            content_type=send.content_type,
            body=send.body,
            server_ts=item.server_ts,
            attachment_ids=send.attachment_ids,
        )
    )
    if item.span is not None:
        traces.into_record(item.span, inbound)
    return inbound
