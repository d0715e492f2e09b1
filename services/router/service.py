"""The router's loop: take a batch from the bus, number and store its messages, apply
cursor reports, set aside what cannot be applied, commit, then deliver messages and
read receipts to the connectors holding the members' devices.

The bus position is committed only after the store write (goim #134: committing
before storing lost messages on restart) and after the cursors and dead letters are
written. A record that cannot be applied never fails its batch: it is checked on
its own (``records.py``) or refused by the store on its own, and set aside as a dead
letter. Only a backend that fails as a whole rewinds the batch, with backoff; and an
unexpected error, which might be a record nobody foresaw, makes the next attempt go
one record at a time, so such a record is found and set aside too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Set
from dataclasses import dataclass, field

import grpc

from im.clock import Clock, SystemClock
from im.config import Settings
from im.grpcutil import ChannelPool
from im.metrics import Distribution
from im.ports import (
    AttachmentStore,
    Backends,
    BackendUnavailable,
    BusConsumer,
    BusRecord,
    DeadLetter,
    DeadLetterStore,
    MessageStore,
    PushNotifier,
)
from im.v1 import bus_pb2, group_pb2, group_pb2_grpc, wire_pb2
from services.router import events, records
from services.router.attachments import AttachmentLinker
from services.router.delivery import Deliverer
from services.router.push import PushDispatcher
from services.router.sequencer import Outcome, Sequencer
from services.router.traces import BatchTraces

log = logging.getLogger("im.router")

CURSOR_RPC_TIMEOUT = 10.0
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 10.0
BATCH_SIZES = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)  # records per poll
# gRPC codes that say "the service is not there right now", not "this request is bad".
_UNAVAILABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}


@dataclass(slots=True)
class RouterStats:
    batches: int = 0
    stored: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    collisions: int = 0
    cursor_writes: int = 0
    cursor_reports: int = 0
    clamped_reports: int = 0
    membership_events: int = 0
    isolated_batches: int = 0
    events_applied: int = 0  # recalls and edits (replays included)
    orphan_events: int = 0  # of them, those whose target is not in their conversation
    batch_sizes: Distribution = field(default_factory=lambda: Distribution(BATCH_SIZES))
    # Seconds the sequencer took to number and store a batch's messages.
    store_seconds: Distribution = field(default_factory=Distribution)


def is_outage(exc: BaseException) -> bool:
    """A backend failing as a whole (retry the batch later), as opposed to something
    about the records at hand."""
    if isinstance(exc, BackendUnavailable | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in _UNAVAILABLE_CODES
    return False


def backoff(failures: int) -> float:
    """Seconds to wait after the n-th consecutive failed batch."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, failures - 1))


class Router:
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        store: MessageStore,
        channels: ChannelPool | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        attachments: AttachmentStore | None = None,
        push: PushNotifier | None = None,
    ) -> None:
        """``push``: where offline members' notifications go (None: push is off)."""
        self.settings = settings
        self.backends = backends
        self.store = store
        self.clock = clock or SystemClock()
        self._sleep = sleep
        self.channels = channels or ChannelPool()
        self.sequencer = Sequencer(store)
        self.delivery = Deliverer(settings, backends, self.channels, self.clock)
        self.push = PushDispatcher(settings, push, self._group) if push is not None else None
        self.delivery.push = self.push
        self.stats = RouterStats()
        # Links attachments to the conversations their owners sent them to.
        self.linker = AttachmentLinker(attachments) if attachments is not None else None
        self.failing = 0  # consecutive failed batches; readiness reflects the real path
        self.last_progress = self.clock.monotonic()  # a loop turn completed
        self.joined = False  # the consumer got its first partition assignment
        # Since when the consumer holds no partition (None: it holds some): past a
        # rebalance's length this router does nothing, and says so.
        self.unassigned_since: float | None = None
        self._isolate = False  # next batch one record at a time
        self._delivering: asyncio.Task | None = None
        self._generation = -1

    @property
    def members(self):  # type: ignore[no-untyped-def]
        return self.delivery.members

    def _group(self) -> group_pb2_grpc.GroupServiceStub:
        return group_pb2_grpc.GroupServiceStub(self.channels.get(self.settings.group_addr()))

    # -------------------------------------------------------------------- loop

    async def run(self, consumer: BusConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.turn(consumer)

    async def turn(self, consumer: BusConsumer) -> None:
        """One poll and its batch; on failure, back off and rewind."""
        try:
            records_ = await consumer.poll(self.settings.router_batch_size, 0.5)
            if consumer.generation != self._generation:
                self._generation = consumer.generation
                self.sequencer.reset()
            self.joined = self.joined or consumer.generation > 0
            self._note_assignment(consumer.assigned)
            if records_:
                await self._handle_polled(records_, consumer)
            self.failing = 0
            self.last_progress = self.clock.monotonic()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failing += 1
            if is_outage(exc):
                log.warning("router batch failed (%r); retrying from the last commit", exc)
            else:
                # Perhaps a record nobody foresaw: the next attempt goes one by one.
                log.exception("router batch failed; retrying it one record at a time")
                self._isolate = True
            await self._sleep(backoff(self.failing))
            await consumer.rewind()

    def _note_assignment(self, partitions: int) -> None:
        if partitions:
            self.unassigned_since = None
        elif self.unassigned_since is None:
            self.unassigned_since = self.clock.monotonic()

    def unassigned_for(self) -> float:
        """Seconds the consumer has held no partition (0 while it holds some)."""
        if self.unassigned_since is None:
            return 0.0
        return self.clock.monotonic() - self.unassigned_since

    async def drain(self, consumer: BusConsumer) -> None:
        """Handle what is already on the bus, without waiting for more (shutdown)."""
        while polled := await consumer.poll(self.settings.router_batch_size, 0):
            await self._handle_polled(polled, consumer)

    async def _handle_polled(self, polled: list[BusRecord], consumer: BusConsumer) -> None:
        self.stats.batch_sizes.observe(len(polled))
        if not self._isolate:
            await self.handle(polled, consumer)
            return
        self.stats.isolated_batches += 1
        for record in polled:
            try:
                await self.handle([record], None)
            except Exception as exc:
                if is_outage(exc):
                    raise
                log.exception("setting aside a record that failed on its own")
                letter = records.dead_letter(record, f"failed on its own: {exc!r}", self._now())
                await self._set_aside([letter])
        await consumer.commit()
        self._isolate = False

    # ------------------------------------------------------------------- batch

    async def handle(self, polled: list[BusRecord], consumer: BusConsumer | None) -> None:
        self.stats.batches += 1
        batch = records.decode(polled, self.settings, self._now())
        spans = BatchTraces(batch.traces) if batch.traces else None
        try:
            await self._apply(batch, consumer, spans)
        except BaseException:
            if spans is not None:
                spans.end("batch failed: retried from the last commit")
            raise

    async def _apply(
        self, batch: records.Batch, consumer: BusConsumer | None, spans: BatchTraces | None
    ) -> None:
        for event in batch.membership:
            self.members.forget(event.conversation_id)
        self.stats.membership_events += len(batch.membership)

        outcome = await self._store(batch.messages) if batch.messages else Outcome()
        self._count(outcome)
        for message, reason in outcome.rejected:
            letter = records.message_letter(batch, self.settings, message, reason, self._now())
            batch.letters.append(letter)
            if spans is not None:
                spans.rejected(message, reason)
        if spans is not None:
            spans.stored(outcome.new, replayed=False)
            spans.stored(outcome.replayed, replayed=True)
        messages = sorted(outcome.new + outcome.replayed, key=lambda m: (m.conversation_id, m.seq))
        # Applied before delivery: a client fetching history on an event sees it.
        applied, orphans = await events.apply_events(self.store, messages)
        self.stats.events_applied += applied
        self.stats.orphan_events += orphans

        if self.linker is not None:
            # Before delivery, so a member can download what it is told about; replays
            # too (a crash may have come between the store and the link).
            await self.linker.link(messages)
        # Stored messages go out at once; the cursor write is not on their way. Only
        # those stored now are pushed: a replay would notify every offline member
        # again. A crash between the store and the push loses the push, which is
        # best effort (the message is stored and synced).
        pushable = {m.msg_id for m in outcome.new}
        await self._start_delivery(messages, {}, self._lag_ms(outcome.new), spans, pushable)

        reports = await self._clamp(batch.reports)
        receipts = await self._apply_cursors(messages, reports)
        if batch.letters:
            await self._set_aside(batch.letters)
        # The bus position is committed once the batch's messages are stored, its
        # cursors written and its bad records set aside: a crash before this replays
        # the batch (stored messages are recognised by msg_id and delivered again,
        # which clients drop as seen, but not pushed again; cursors only move
        # forward; dead letters are stored once).
        if consumer is not None:
            await consumer.commit()
        await self._start_delivery([], receipts)

    def _lag_ms(self, new: list[wire_pb2.Message]) -> int | None:
        """How long the oldest new message of the batch waited for this router (its
        server_ts is the connector's clock: a skewed clock reads as no lag)."""
        if not new:
            return None
        return max(0, self._now() - min(m.server_ts for m in new))

    async def _start_delivery(
        self,
        messages: list[wire_pb2.Message],
        receipts: dict[tuple[str, int], int],
        lag_ms: int | None = None,
        spans: BatchTraces | None = None,
        pushable: Set[int] = frozenset(),
    ) -> None:
        """Delivery runs while the batch goes on and the next is taken: one delivery in
        flight at a time, so batches still reach the connectors in bus order. (The
        connector lanes then send on their own: a slow connector holds up nobody.)"""
        if not messages and not receipts:
            if spans is not None:
                spans.end()
            return
        if self._delivering is not None:
            await self._delivering
        self._delivering = asyncio.get_running_loop().create_task(
            self._deliver_quietly(messages, receipts, lag_ms, spans, pushable)
        )

    async def _store(self, messages: list[wire_pb2.Message]) -> Outcome:
        started = self.clock.monotonic()
        outcome = await self.sequencer.store(messages)
        self.stats.store_seconds.observe(self.clock.monotonic() - started)
        return outcome

    def _count(self, outcome: Outcome) -> None:
        self.stats.stored += len(outcome.new)
        self.stats.replayed += len(outcome.replayed)
        self.stats.collisions += outcome.collisions

    def _now(self) -> int:
        return self.clock.wall_ms()

    async def _set_aside(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            log.warning(
                "dead letter %s from %s/%s@%s: %s",
                letter.letter_id,
                letter.topic,
                letter.partition,
                letter.offset,
                letter.reason,
                # Records of the messages and cursors topics are keyed by conversation.
                extra={"conversation_id": letter.key} if letter.key else None,
            )
        store: DeadLetterStore = self.store  # type: ignore[assignment]
        await store.put_dead_letters(letters)
        self.stats.dead_lettered += len(letters)

    # ----------------------------------------------------------------- cursors

    async def _clamp(self, reports: list[bus_pb2.CursorReport]) -> list[bus_pb2.CursorReport]:
        """Cursors never pass the last stored message (a cursor beyond it would hide
        messages still to come, and count unread wrongly)."""
        if not reports:
            return []
        last = {
            r.conversation_id: self.sequencer.last_known(r.conversation_id) or 0 for r in reports
        }
        unsure = [
            r.conversation_id
            for r in reports
            if max(r.delivered_seq, r.read_seq) > last[r.conversation_id]
        ]
        if unsure:
            stored = await self.store.last_seqs(list(dict.fromkeys(unsure)))
            for conversation_id, seq in stored.items():
                last[conversation_id] = max(last[conversation_id], seq)
        out = []
        for r in reports:
            limit = last[r.conversation_id]
            if r.delivered_seq > limit or r.read_seq > limit:
                self.stats.clamped_reports += 1
                r = bus_pb2.CursorReport(
                    conversation_id=r.conversation_id,
                    user_id=r.user_id,
                    device_id=r.device_id,
                    delivered_seq=min(r.delivered_seq, limit),
                    read_seq=min(r.read_seq, limit),
                )
            out.append(r)
        return out

    async def _apply_cursors(
        self, messages: list[wire_pb2.Message], reports: list[bus_pb2.CursorReport]
    ) -> dict[tuple[str, int], int]:
        """One write for all of a batch's cursor moves (many acks -> one update each).
        Returns the read receipts to push: reads now stored for a real member."""
        # The sender has read its own message; members' acks and reads move forward.
        cursors: dict[tuple[str, int], list[int]] = {}
        for m in messages:
            _merge(cursors, m.conversation_id, m.sender_id, m.seq, m.seq)
        reads: set[tuple[str, int]] = set()
        for r in reports:
            _merge(cursors, r.conversation_id, r.user_id, r.delivered_seq, r.read_seq)
            if r.read_seq:
                reads.add((r.conversation_id, r.user_id))
        self.stats.cursor_reports += len(reports)
        if not cursors:
            return {}
        reply = await self._group().UpdateCursors(
            group_pb2.UpdateCursorsRequest(
                updates=[
                    group_pb2.CursorUpdate(
                        conversation_id=conv,
                        user_id=uid,
                        delivered_seq=d,
                        read_seq=r,
                        confirm_read=(conv, uid) in reads,
                    )
                    for (conv, uid), (d, r) in cursors.items()
                ]
            ),
            timeout=CURSOR_RPC_TIMEOUT,
        )
        self.stats.cursor_writes += 1
        # A receipt only for a reader whose stored read cursor is what it reported: no
        # receipts for strangers, made-up conversations or stale reports.
        return {(s.conversation_id, s.user_id): s.read_seq for s in reply.stored_reads}

    # ---------------------------------------------------------------- delivery

    async def flush(self) -> None:
        """Wait for the delivery in flight and the connector lanes (tests, shutdown)."""
        if self._delivering is not None:
            await self._delivering
            self._delivering = None
        await self.delivery.idle()

    async def _deliver_quietly(
        self,
        messages: list[wire_pb2.Message],
        receipts: dict[tuple[str, int], int],
        lag_ms: int | None,
        spans: BatchTraces | None = None,
        pushable: Set[int] = frozenset(),
    ) -> None:
        # A failed delivery loses nothing (the messages are stored; devices sync), so
        # it must not fail the batch and make it replay.
        traces = spans.parents() if spans is not None else None
        try:
            await self.delivery.deliver(messages, receipts, lag_ms, traces, pushable)
        except Exception:
            self.delivery.stats.delivery_failures += 1
            log.exception("delivery of a batch failed; its messages wait for sync")
            if spans is not None:
                spans.end("delivery failed; the messages wait for sync")
        finally:
            if spans is not None:
                spans.end()

    async def deliver(
        self, messages: list[wire_pb2.Message], receipts: dict[tuple[str, int], int] | None = None
    ) -> None:
        await self.delivery.deliver(messages, receipts)


def _merge(
    cursors: dict[tuple[str, int], list[int]], conv: str, user: int, delivered: int, read: int
) -> None:
    entry = cursors.get((conv, user))
    if entry is None:
        cursors[(conv, user)] = [delivered, read]
    else:
        entry[0] = max(entry[0], delivered)
        entry[1] = max(entry[1], read)
