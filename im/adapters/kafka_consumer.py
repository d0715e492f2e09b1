"""One member of a Kafka consumer group for the bus (``kafka_bus``): every
kafka-python call on one dedicated thread, positions committed only when asked, and
recovery from a broker that came back without its topics or its group."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import kafka.errors as kafka_errors
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from im.adapters.kafka_common import (
    TopicLayoutError,
    forbid_auto_create,
    transient,
    unavailable_on_failure,
    unavailable_on_failure_or_layout,
)
from im.ports import BusRecord

if TYPE_CHECKING:
    from im.adapters.kafka_bus import KafkaBus

log = logging.getLogger("im.bus.kafka")

T = TypeVar("T")

CONSUMER_FAILURE_LIMIT = 3
# How soon a consumer tries again a topic check that failed (the broker is away).
TOPIC_RECHECK_BACKOFF = 1.0
# A group join not completed after this many session timeouts is asked to start over
# (see _ask_to_rejoin); a join on Tansu takes about half a session timeout.
STUCK_JOIN_SESSIONS = 3
# Seconds between two looks at the lag (after a poll, from what the fetches reported).
LAG_EVERY = 5.0


def _ask_to_rejoin(consumer: KafkaConsumer) -> None:
    """Make the consumer's next poll (re)join its group.

    kafka-python 3.0 can orphan a join: a rejoin started only because a subscribed
    topic vanished from the metadata (a broker restart) is abandoned if the topic is
    back, with the same partitions, before the JoinGroup completes. Its "need rejoin"
    check is then false again, nobody collects the finished join, and the consumer
    stays "rebalancing" for good, fetching nothing. Asking for a rejoin makes the next
    poll collect (or redo) that join. Harmless during a normal join. There is no
    public call for this (Java has enforceRebalance); ``getattr``s, in case a later
    release moves it."""
    request_rejoin = getattr(getattr(consumer, "_coordinator", None), "request_rejoin", None)
    if callable(request_rejoin):
        request_rejoin()
    else:
        log.warning("cannot ask this kafka-python version's consumer to rejoin its group")


class _GenerationListener(ConsumerRebalanceListener):
    """Bumps the consumer's generation on every assignment change, notes when a join
    started and ended, and asks for a look at the topics (a rejoin is what a broker
    restart looks like from here). Runs on kafka's IO thread: it only sets numbers and
    flags, never calls back into the consumer."""

    def __init__(self, owner: KafkaBusConsumer) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._owner._joining_since = time.monotonic()  # revoked: a (re)join begins
        self._owner._assigned = 0  # eager assignors: every partition goes back
        if revoked:
            self._owner._generation += 1
            self._owner._check_topics = True

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner._joining_since = None
        self._owner._assigned = len(assigned)
        self._owner._generation += 1
        self._owner._check_topics = True


class KafkaBusConsumer:
    """One member of a consumer group; all kafka calls on one dedicated thread.

    After a broker restart that lost the topics (the bus epoch moved), the member
    starts over from the beginning of the new logs; after repeated poll errors it
    recreates its ``KafkaConsumer``. Either way ``generation`` changes.
    """

    def __init__(
        self, bus: KafkaBus, topics: list[str], group: str, background: bool = False
    ) -> None:
        self._bus = bus
        self._background = background
        self.topics = topics
        self.group = group
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"kafka-consumer-{group}")
        self._consumer: KafkaConsumer | None = None  # touched only on the executor thread
        # The bus epoch that this member's positions belong to; executor thread only.
        self._epoch = 0
        self._poll_failures = 0  # consecutive; executor thread only
        self._generation = 0
        self._assigned = 0  # partitions held, as the rebalance listener last said
        # Set by the rebalance listener: look at the topics after this poll; when the
        # current (re)join began (None: joined).
        self._check_topics = False
        self._check_tried_at = float("-inf")
        self._joining_since: float | None = None
        # Next offset to commit per partition: last offset returned by poll + 1, for
        # records handed out in generation ``_pending_generation``.
        self._pending: dict[TopicPartition, int] = {}
        self._pending_generation = 0
        # Records fetched by a poll whose caller was cancelled: handed out next time,
        # because the kafka position has already moved past them.
        self._carry: list[BusRecord] = []
        self._carry_generation = 0
        # Set by rewind() until the seeks succeeded; poll() finishes it first, so a
        # failed batch is never skipped even if the broker was away during rewind.
        self._must_rewind = False  # executor thread only
        self._closed = False
        # Records not handed out yet per (topic, partition), measured on the executor
        # thread at most every lag_every seconds and replaced whole (read from others).
        self.lag_every = LAG_EVERY
        self._lag: dict[tuple[str, int], int] = {}
        self._lag_generation = -1
        self._lag_at = float("-inf")

    @property
    def generation(self) -> int:
        return self._generation

    def lag(self) -> dict[tuple[str, int], int]:
        # Measured for another assignment: those partitions may be someone else's now.
        return self._lag if self._lag_generation == self._generation else {}

    def _measure_lag(self, consumer: KafkaConsumer) -> None:
        """Highwater (from the last fetch response: no request) minus the position, per
        assigned partition. Executor thread, right after a poll (which leaves every
        fetchable partition with a position, so ``position`` has nothing to ask)."""
        now = time.monotonic()
        if now - self._lag_at < self.lag_every or self._joining_since is not None:
            return
        self._lag_at = now
        generation = self._generation
        lag: dict[tuple[str, int], int] = {}
        try:
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                position = consumer.position(tp, timeout_ms=0) if high is not None else None
                if high is not None and position is not None:
                    lag[(tp.topic, tp.partition)] = max(0, high - position)
        except Exception as exc:  # a rebalance under way: look again next time
            log.debug("lag of group %s not measured: %r", self.group, exc)
            return
        self._lag, self._lag_generation = lag, generation

    @property
    def assigned(self) -> int:
        return 0 if self._closed else self._assigned

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ---------------------------------------------------- the KafkaConsumer

    def _kafka(self) -> KafkaConsumer:
        """The KafkaConsumer, created (and subscribed) on first use and again after
        ``_discard``. Executor thread."""
        if self._consumer is None:
            self._bus.ensure_topics_sync(self.topics)
            epoch = self._bus.epoch  # after the check, which may have moved it
            consumer = KafkaConsumer(**self._bus._consumer_settings(self.group, self._background))
            forbid_auto_create(consumer)
            consumer.subscribe(self.topics, listener=_GenerationListener(self))
            self._consumer, self._epoch = consumer, epoch
            self._joining_since = time.monotonic()
        return self._consumer

    def _discard(self, reason: str) -> None:
        """Close a stuck KafkaConsumer; the next poll creates a new one, which starts
        from the group's commits (else from the beginning: auto_offset_reset earliest).
        Executor thread."""
        consumer, self._consumer = self._consumer, None
        self._poll_failures = 0
        if consumer is None:
            return
        self._generation += 1
        self._assigned = 0  # the new one joins the group afresh
        self._must_rewind = False  # the new one starts from the commits anyway
        log.warning("recreating the kafka consumer of group %s: %s", self.group, reason)
        try:
            consumer.close(autocommit=False, timeout_ms=self._bus.request_timeout_ms)
        except Exception as exc:
            log.info("closing the old kafka consumer of group %s failed: %r", self.group, exc)

    def _restart_positions(self) -> frozenset[str]:
        """The broker lost topics since this member's positions were taken: for those
        topics, the positions point into logs that are gone (beyond the end of the new
        ones, or worse, into records they would skip). Start over from the beginning
        of their new logs: the group's commits went with the old ones. Executor thread.

        Local only: no call that waits for the coordinator, which may be in the middle
        of the rejoin that kafka-python starts by itself (it can only finish inside
        this thread's next poll). And the KafkaConsumer is kept: closing a member in
        the middle of that rejoin wedges the group on Tansu (the others keep failing
        SyncGroup with "rebalance in progress"). Returns the topics lost."""
        lost = self._bus.lost_since(self._epoch) & frozenset(self.topics)
        self._epoch = self._bus.epoch
        consumer = self._consumer
        if not lost or consumer is None:
            return lost  # a new KafkaConsumer starts from the group's commits anyway
        log.warning(
            "kafka lost topics %s of group %s: their positions start over from the new logs",
            sorted(lost),
            self.group,
        )
        self._generation += 1  # positions from before are not to be committed
        if lost == set(self.topics):
            self._must_rewind = False  # the beginning is before any commit
        # Partitions assigned later start from the (new) group's commits, else from
        # the beginning (auto_offset_reset earliest), by themselves.
        gone = [tp for tp in consumer.assignment() if tp.topic in lost]
        if gone:
            consumer.seek_to_beginning(*gone)
        # The topics vanished and came back: the rejoin that kafka-python started
        # meanwhile may be orphaned.
        _ask_to_rejoin(consumer)
        return lost

    def _unstick_join(self) -> None:
        """A (re)join that has not completed for several session timeouts is asked to
        start over (see ``_ask_to_rejoin``). Executor thread."""
        since = self._joining_since
        stuck_after = STUCK_JOIN_SESSIONS * self._bus.session_timeout_ms / 1000
        if since is None or self._consumer is None or time.monotonic() - since < stuck_after:
            return
        log.warning(
            "group %s: the kafka consumer's join has not completed for %.0f s; asking again",
            self.group,
            time.monotonic() - since,
        )
        self._joining_since = time.monotonic()
        _ask_to_rejoin(self._consumer)

    # ------------------------------------------------------------------ poll

    def _poll_sync(self, max_records: int, timeout: float) -> list[BusRecord]:
        try:
            consumer = self._kafka()
            if self._epoch != self._bus.epoch:
                self._restart_positions()
            if self._must_rewind:
                self._seek_to_committed()
            batches = consumer.poll(timeout_ms=max(0, int(timeout * 1000)), max_records=max_records)
        except (kafka_errors.KafkaError, OSError) as exc:
            self._poll_failed(exc)
            raise
        self._poll_failures = 0
        self._unstick_join()
        self._measure_lag(consumer)
        if batches and self._logs_replaced(consumer, {tp.topic for tp in batches}):
            # These records come from a topic created again since we last looked,
            # read from positions in its old log: they may skip the new log's first
            # records. Look now (moves the epoch), before anything is handed out.
            self._check_topics = True
            self._check_tried_at = float("-inf")
        try:
            self._maybe_check_topics()
        except TopicLayoutError:
            self._must_rewind = True  # these records are not handed out: fetch them again
            raise
        if self._epoch != self._bus.epoch:
            # Records of lost topics may come from the new logs, read from our old
            # positions (past records nobody would hand us again): drop them, start
            # those over.
            lost = self._restart_positions()
            batches = {tp: records for tp, records in batches.items() if tp.topic not in lost}
        out: list[BusRecord] = []
        for tp in sorted(batches, key=lambda tp: (tp.topic, tp.partition)):
            for r in batches[tp]:
                key = r.key.decode("utf-8", "replace") if r.key is not None else ""
                out.append(BusRecord(tp.topic, tp.partition, r.offset, key, r.value or b""))
        return out

    def _logs_replaced(self, consumer: KafkaConsumer, topics: set[str]) -> bool:
        """kafka-python's metadata (refreshed after the reconnect that a broker
        restart causes) names another id for one of these topics than the one ensured.
        A local look: no request. Executor thread."""
        cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
        topic_id = getattr(cluster, "topic_id", None)
        if not callable(topic_id):
            return False
        for topic in topics:
            seen, known = topic_id(topic), self._bus.known_topic_id(topic)
            if seen is not None and known and str(seen) != known:
                return True
        return False

    def _poll_failed(self, exc: BaseException) -> None:
        self._bus._note_failure()
        self._check_topics = True
        self._poll_failures += 1
        if not transient(exc) or self._poll_failures >= CONSUMER_FAILURE_LIMIT:
            self._discard(f"{self._poll_failures} failed polls in a row, last {exc!r}")

    def _maybe_check_topics(self) -> None:
        """Look at the topics after a rebalance or a poll error, and now and then
        anyway: kafka-python hides most broker errors inside poll, and a broker that
        came back empty must be noticed (to re-create the topics and move the epoch)
        even by a process that only consumes. Executor thread."""
        now = time.monotonic()
        if now - self._check_tried_at < TOPIC_RECHECK_BACKOFF:
            return
        due = now - self._bus._verified_at >= self._bus.topic_check_interval
        if not (self._check_topics or due):
            return
        self._check_tried_at = now
        self._check_topics = False
        try:
            self._bus.ensure_topics_sync(self.topics, verify=True)
        except (kafka_errors.KafkaError, OSError) as exc:
            self._check_topics = True  # the broker is away: again after the backoff
            log.debug("topic check of group %s failed: %r", self.group, exc)

    def _hand_out(self, records: list[BusRecord]) -> list[BusRecord]:
        if records and self._pending_generation != self._generation:
            # Positions from before a rebalance or reset are not ours to commit.
            self._pending = {}
            self._pending_generation = self._generation
        for r in records:
            self._pending[TopicPartition(r.topic, r.partition)] = r.offset + 1
        return records

    @unavailable_on_failure_or_layout
    async def poll(self, max_records: int, timeout: float) -> list[BusRecord]:
        if self._closed:
            return []
        carried = self._take_carry(max_records)
        if carried:
            return self._hand_out(carried)
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self._poll_sync, max_records, timeout
        )
        try:
            records = await asyncio.shield(future)
        except asyncio.CancelledError:
            generation = self._generation
            future.add_done_callback(lambda f: self._stash(f, generation))
            raise
        # A cancelled poll that was still running ahead of this one fetched earlier
        # records: they go first.
        if self._carry and self._carry_generation == self._generation:
            records = self._carry + records
            self._carry = records[max_records:]
            records = records[:max_records]
        else:
            self._carry = []
        return self._hand_out(records)

    def _take_carry(self, max_records: int) -> list[BusRecord]:
        if not self._carry:
            return []
        if self._carry_generation != self._generation:
            self._carry = []  # assignment changed: kafka reset the positions anyway
            return []
        out, self._carry = self._carry[:max_records], self._carry[max_records:]
        return out

    def _stash(self, future: asyncio.Future[list[BusRecord]], generation: int) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        self._carry.extend(future.result())
        self._carry_generation = generation

    # ---------------------------------------------------------------- commit

    def _commit_sync(self, offsets: dict[TopicPartition, int], generation: int) -> None:
        consumer = self._consumer
        if consumer is None or generation != self._generation:
            # Handed out before a rebalance or a reset of the KafkaConsumer: after a
            # broker restart these positions point into logs that are gone, and
            # committing them to the new group would skip its first records. The
            # partitions' owners replay from the last commit instead (the router
            # recognises replays by msg_id).
            log.info("not committing positions of group %s from an older generation", self.group)
            return
        assigned = consumer.assignment()
        # A partition revoked since poll belongs to someone else now: its new owner
        # replays from the last commit.
        mine = {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items() if tp in assigned}
        if not mine:
            return
        try:
            consumer.commit(mine, timeout_ms=self._bus.request_timeout_ms)
        except kafka_errors.CommitFailedError as exc:
            log.warning("commit of group %s lost to a rebalance: %s", self.group, exc)

    @unavailable_on_failure
    async def commit(self) -> None:
        if self._closed or not self._pending:
            return
        offsets, generation = self._pending, self._pending_generation
        self._pending = {}
        try:
            await self._run(self._commit_sync, offsets, generation)
        except BaseException:
            # Keep them for the next try, without overwriting newer positions.
            if self._pending_generation == generation:
                for tp, offset in offsets.items():
                    self._pending.setdefault(tp, offset)
            raise

    # ---------------------------------------------------------------- rewind

    def _seek_to_committed(self) -> None:
        consumer = self._consumer
        if consumer is not None:  # none yet: it will start from the commits anyway
            for tp in consumer.assignment():
                committed = consumer.committed(tp, timeout_ms=self._bus.request_timeout_ms)
                if committed is None:
                    consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, committed)
        self._must_rewind = False

    def _rewind_sync(self) -> None:
        self._must_rewind = True
        try:
            self._seek_to_committed()
        except Exception as exc:
            # The router calls rewind from its error path: do not raise from there.
            log.warning("rewind of group %s deferred to the next poll: %r", self.group, exc)

    async def rewind(self) -> None:
        if self._closed:
            return
        self._pending.clear()
        self._carry = []
        await self._run(self._rewind_sync)

    # ----------------------------------------------------------------- close

    def _close_sync(self) -> None:
        if self._consumer is not None:
            # LeaveGroup at once, so the others rebalance without waiting a session.
            self._consumer.close(autocommit=False, timeout_ms=self._bus.request_timeout_ms)
            self._consumer = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._run(self._close_sync)
        finally:
            self._executor.shutdown(wait=False)
