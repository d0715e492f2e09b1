"""Bus on Kafka through kafka-python 3.0.x (blocking client, bridged to asyncio).

kafka-python blocks, so nothing here calls it on the event loop:

- the producer is shared (it is thread safe); ``send`` runs on one dedicated thread
  (it can block on metadata), and the broker's acks come back as kafka futures that
  are bridged into asyncio futures with ``call_soon_threadsafe``;
- each consumer owns one single-thread executor, because ``KafkaConsumer`` is not
  thread safe: every call on it (create, subscribe, poll, commit, seek, close) runs
  on that one thread;
- admin calls (topic creation, health) run on their own thread; a broken producer is
  closed on another one, so nobody waits for it.

Topics are created by this adapter with their final partition count (Tansu has no
CreatePartitions, and a real cluster should not guess either); producers and
consumers are told not to auto-create, so a missing topic is an error, not a topic
with the broker's default partition count. A topic with another partition count is
refused (``TopicLayoutError`` at start, unhealthy and ``BackendUnavailable`` later).

Recovery without a restart of ours, when the broker dies and comes back:

- a producer that failed in a way it does not recover from (kafka-python's idempotent
  producer stays fatal after a broker that forgot its producer id, e.g.
  ``InitProducerId ... UnknownError``), or kept failing, is closed in the background
  and the next publish creates a new one;
- after a publish failure, and now and then from consumers and health checks, the
  topics are checked again: missing ones are re-created, and a topic that is gone or
  has a new topic id means the broker may have lost acknowledged records, which
  ``epoch`` tells the publishers (they publish their recent records again);
- a consumer whose epoch moved starts over from the beginning of the new logs (its
  positions and the group's commits belonged to logs that no longer exist), never
  commits positions handed out before that (or before any rebalance), and recreates
  its ``KafkaConsumer`` after repeated poll errors (a stuck client).

Every call is bounded by the bus's timeouts (bootstrap, max_block, request, delivery)
and raises ``BackendUnavailable`` instead of kafka-python's errors.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlparse

import kafka.errors as kafka_errors
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from im.adapters.errors import unavailable_on
from im.ports import BackendUnavailable, BusRecord

if TYPE_CHECKING:
    from kafka.future import Future as KafkaFuture

    from im.config import Settings

log = logging.getLogger("im.bus.kafka")

T = TypeVar("T")

# Settings of ours that a kafka:// URL may override (?name=value), all integers.
_URL_INT_SETTINGS = (
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "fetch_max_wait_ms",
    "max_poll_records",
    "max_poll_interval_ms",
    "linger_ms",
    "request_timeout_ms",
    "delivery_timeout_ms",
    "max_block_ms",
    "bootstrap_timeout_ms",
    "replication_factor",
)

BACKGROUND_FETCH_WAIT_MS = 500
# Consecutive failures after which a client is replaced even if each failure looked
# transient: kafka-python can stay stuck behind errors that it retries forever.
PRODUCER_FAILURE_LIMIT = 3
CONSUMER_FAILURE_LIMIT = 3
# How soon a consumer tries again a topic check that failed (the broker is away).
TOPIC_RECHECK_BACKOFF = 1.0
# A group join not completed after this many session timeouts is asked to start over
# (see _ask_to_rejoin); a join on Tansu takes about half a session timeout.
STUCK_JOIN_SESSIONS = 3


class TopicLayoutError(Exception):
    """Topics exist with another partition count than the settings say.

    Never used silently: a different count moves conversations (keys) to other
    partitions, hence other routers, and Tansu cannot add partitions anyway. Raised by
    ``start``/``ensure_topics``; publish and poll raise ``BackendUnavailable`` with
    this message instead."""

    def __init__(self, counts: dict[str, int], wanted: int) -> None:
        found = ", ".join(f"topic {t} has {n} partitions" for t, n in sorted(counts.items()))
        super().__init__(
            f"{found}; the settings say {wanted}: fix the topic or the settings "
            "(it is never used with another partition count)"
        )
        self.counts = counts
        self.wanted = wanted


def _only_known(cls: type, settings: dict[str, Any]) -> dict[str, Any]:
    """The subset of extra client settings this kafka-python class accepts (each class
    rejects unknown keys, and e.g. ``sasl_*`` apply to all three but ``linger_ms`` only
    to the producer)."""
    known = cls.DEFAULT_CONFIG  # type: ignore[attr-defined]
    return {k: v for k, v in settings.items() if k in known}


def _forbid_auto_create(client: KafkaProducer | KafkaConsumer) -> None:
    """Make the client's metadata requests say allow_auto_topic_creation=False.

    kafka-python 3.0 accepts ``allow_auto_create_topics`` but does not pass it on to
    the cluster metadata that builds the requests, so every metadata request asks the
    broker to create unknown topics. After a broker restart that lost our topics,
    Tansu would then re-create them with its default partition count (4) instead of
    ours. Set it where it is read; ``getattr``s, in case a later release moves it."""
    attribute = "_metadata" if isinstance(client, KafkaProducer) else "_cluster"
    config = getattr(getattr(client, attribute, None), "config", None)
    if isinstance(config, dict):
        config["allow_auto_create_topics"] = False
    else:
        log.warning("cannot turn off topic auto-creation in this kafka-python version")


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


def _transient(exc: BaseException) -> bool:
    """An error that kafka-python retries by itself or that a reconnect cures."""
    return isinstance(exc, (kafka_errors.RetriableError, OSError))


# Errors after which kafka-python's idempotent producer does not recover: its producer
# id, epoch or sequence numbers no longer match the broker's (a broker that restarted
# without its state, or another producer took over).
_FATAL_PRODUCER_ERRORS: tuple[type[Exception], ...] = (
    kafka_errors.ProducerFencedError,
    kafka_errors.UnknownProducerIdError,
    kafka_errors.OutOfOrderSequenceNumberError,
    kafka_errors.InvalidProducerEpochError,
    kafka_errors.InvalidProducerIdMappingError,
    kafka_errors.InvalidTxnStateError,
    kafka_errors.IllegalStateError,
)


def _producer_is_broken(exc: BaseException, consecutive_failures: int) -> bool:
    if isinstance(exc, _FATAL_PRODUCER_ERRORS):
        return True
    # The producer's own InitProducerId failures arrive as a plain KafkaError and
    # leave it in a fatal state that fails every later send.
    if "InitProducerId" in str(exc):
        return True
    return not _transient(exc) or consecutive_failures >= PRODUCER_FAILURE_LIMIT


def _topic_id(described: dict[str, Any]) -> str:
    """The topic's id (changes when a topic is deleted and created again), or "" when
    the broker does not tell (ids came with Kafka 2.8; all zeros means none)."""
    value = described.get("topic_id")
    text = str(value) if value else ""
    return text if text.strip("0-") else ""


# kafka-python's errors (KafkaError, with KafkaTimeoutError for a broker that cannot be
# reached in time, from the client's creation, the call or the broker's answer) and
# socket errors: the bus is down, try later.
_unavailable_on_failure = unavailable_on("kafka", (kafka_errors.KafkaError, OSError))
# Publish and poll also refuse a topic with the wrong partition count that way (at
# start it is a TopicLayoutError of its own, to stop the process loudly).
_unavailable_on_failure_or_layout = unavailable_on(
    "kafka", (kafka_errors.KafkaError, OSError, TopicLayoutError)
)


def _bridge(loop: asyncio.AbstractEventLoop, kfut: KafkaFuture) -> asyncio.Future[Any]:
    """An asyncio future resolved when a kafka future is (from kafka's IO thread)."""
    afut: asyncio.Future[Any] = loop.create_future()

    def _set_result(value: Any) -> None:
        if not afut.done():
            afut.set_result(value)

    def _set_exception(exc: BaseException) -> None:
        if not afut.done():
            afut.set_exception(exc)

    kfut.add_callback(lambda value: loop.call_soon_threadsafe(_set_result, value))
    kfut.add_errback(lambda exc: loop.call_soon_threadsafe(_set_exception, exc))
    return afut


class KafkaBus:
    """The ``Bus`` port on a Kafka cluster (or a wire-compatible broker such as Tansu).

    ``client_settings`` are extra kafka-python settings (security_protocol, sasl_*,
    ssl_*, ...) handed to every client that accepts them. ``topic_check_interval``:
    how often (seconds) consumers look at the topics again even when nothing failed.
    """

    def __init__(
        self,
        bootstrap: str,
        partitions: int,
        topics: list[str],
        client_id: str = "im",
        *,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 500,
        fetch_max_wait_ms: int = 10,
        max_poll_records: int = 500,
        max_poll_interval_ms: int = 300_000,
        linger_ms: int = 2,
        request_timeout_ms: int = 10_000,
        delivery_timeout_ms: int = 30_000,
        max_block_ms: int = 10_000,
        bootstrap_timeout_ms: int = 10_000,
        replication_factor: int = -1,
        health_timeout: float = 2.0,
        topic_check_interval: float = 5.0,
        **client_settings: Any,
    ) -> None:
        self.bootstrap = [h.strip() for h in bootstrap.split(",") if h.strip()]
        self.partitions = partitions
        self.topics = list(topics)
        self.client_id = client_id
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        # Tansu does not wake a waiting fetch when data arrives: latency follows this.
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.max_poll_records = max_poll_records
        self.max_poll_interval_ms = max_poll_interval_ms
        self.linger_ms = linger_ms
        self.request_timeout_ms = request_timeout_ms
        self.delivery_timeout_ms = max(delivery_timeout_ms, linger_ms + request_timeout_ms)
        self.max_block_ms = max_block_ms
        self.bootstrap_timeout_ms = bootstrap_timeout_ms
        # -1: the broker's default (needs a broker >= 2.4, which Tansu claims).
        self.replication_factor = replication_factor
        self.health_timeout = health_timeout
        self.topic_check_interval = topic_check_interval
        self.client_settings = client_settings

        self._producer: KafkaProducer | None = None
        self._producer_epoch = 0  # the epoch it was created in
        self._producer_failures = 0  # consecutive failed publishes
        self._admin: KafkaAdminClient | None = None
        self._producer_lock = asyncio.Lock()
        # send() may block on metadata; one thread keeps the call order of publishes.
        self._send_executor = ThreadPoolExecutor(1, thread_name_prefix=f"{client_id}-send")
        self._admin_executor = ThreadPoolExecutor(1, thread_name_prefix=f"{client_id}-admin")
        # Broken producers are closed here: that may wait for their in-flight records.
        self._dispose_executor = ThreadPoolExecutor(1, thread_name_prefix=f"{client_id}-dispose")
        self._admin_lock = threading.Lock()
        # One topic check at a time (admin thread, consumer threads): each loss of the
        # topics moves the epoch once.
        self._topics_lock = threading.Lock()
        # Topics known to exist as the settings say -> their topic id ("" if unknown).
        self._ensured: dict[str, str] = {}
        # Topics with another partition count -> (their count, when that was seen).
        self._mismatched: dict[str, tuple[int, float]] = {}
        self._epoch = 0
        # The topics lost at each epoch step: _losses[n] moved the epoch from n to n+1.
        self._losses: list[frozenset[str]] = []
        # When the last check of every ensured topic started, and when a client last
        # failed: a failure after the last check makes the next publish check first.
        self._verified_at = float("-inf")
        self._failed_at = float("-inf")
        self._health: ThreadFuture[bool] | None = None
        self._consumers: weakref.WeakSet[KafkaBusConsumer] = weakref.WeakSet()
        self._closed = False

    @property
    def epoch(self) -> int:
        """Moves each time the broker turned out to have lost topics this bus had
        ensured (gone, or created again meanwhile): records it acknowledged before may
        be lost. 0 until then."""
        return self._epoch

    def lost_since(self, epoch: int) -> frozenset[str]:
        """The topics the broker lost after ``epoch`` (a value ``epoch`` had)."""
        return frozenset().union(*self._losses[epoch:])

    # ----------------------------------------------------------------- set-up

    def _common(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
        }

    def _admin_sync(self) -> KafkaAdminClient:
        with self._admin_lock:
            if self._admin is None:
                settings = {**_only_known(KafkaAdminClient, self.client_settings), **self._common()}
                self._admin = KafkaAdminClient(**settings)
            return self._admin

    def _note_failure(self) -> None:
        """A client failed: the topics may be gone, look at them before the next use."""
        self._failed_at = time.monotonic()

    @property
    def _topics_suspect(self) -> bool:
        return self._failed_at >= self._verified_at

    def ensure_topics_sync(
        self, topics: Iterable[str] | None = None, *, verify: bool = False
    ) -> None:
        """Make sure the topics (default: the configured ones) exist with the configured
        partition count, creating missing ones. Topics seen fine before are taken on
        trust unless ``verify``, which looks at them all again (and moves the epoch if
        the broker lost some). Raises ``TopicLayoutError`` for a topic with another
        count. Blocking: call from a worker thread."""
        wanted = list(dict.fromkeys(self.topics if topics is None else topics))
        with self._topics_lock:
            started = time.monotonic()
            if verify:
                check = list(dict.fromkeys([*wanted, *self._ensured]))
            else:
                check = [t for t in wanted if self._needs_check(t, started)]
            if check:
                self._sync_topics(check)
                if verify:
                    self._verified_at = started
            bad = {t: self._mismatched[t][0] for t in wanted if t in self._mismatched}
        if bad:
            raise TopicLayoutError(bad, self.partitions)

    def _needs_check(self, topic: str, now: float) -> bool:
        if topic in self._ensured:
            return False
        mismatch = self._mismatched.get(topic)
        # A refused topic is looked at again now and then (an operator may fix it),
        # not on every publish.
        return mismatch is None or now - mismatch[1] >= self.topic_check_interval

    def _sync_topics(self, names: list[str]) -> None:
        """Describe the topics, create the missing ones, note the partition counts and
        whether the broker lost any topic ensured before. Topics lock held."""
        admin = self._admin_sync()
        found = self._describe_sync(admin, names)
        missing = [t for t in names if t not in found]
        if missing:
            self._create_sync(admin, missing)
            found.update(self._describe_sync(admin, missing))
        not_visible = [t for t in names if t not in found]
        if not_visible:
            raise kafka_errors.KafkaTimeoutError(f"topics {not_visible} not visible after creation")
        lost = [
            t
            for t in names
            if t in self._ensured and (t in missing or self._replaced(t, found[t][1]))
        ]
        now = time.monotonic()
        for topic in names:
            count, topic_id = found[topic]
            if count == self.partitions:
                self._ensured[topic] = topic_id
                self._mismatched.pop(topic, None)
            else:
                self._ensured.pop(topic, None)
                self._note_mismatch(topic, count, now)
        if lost:
            self._losses.append(frozenset(lost))
            self._epoch += 1
            log.warning(
                "kafka lost topics %s (a broker restart without its data?): created again; "
                "records acknowledged before may be lost (bus epoch %d)",
                lost,
                self._epoch,
            )

    def _replaced(self, topic: str, topic_id: str) -> bool:
        """The topic was deleted and created again since we saw it (by anyone)."""
        known = self._ensured[topic]
        return bool(known and topic_id and known != topic_id)

    def _note_mismatch(self, topic: str, count: int, now: float) -> None:
        previous = self._mismatched.get(topic)
        if previous is None or previous[0] != count:
            # No CreatePartitions on Tansu, and changing the count would move
            # conversations between routers: say so loudly, do not "fix" it.
            log.error(
                "topic %s has %d partitions, settings say %d: refusing to use it",
                topic,
                count,
                self.partitions,
            )
        self._mismatched[topic] = (count, now)

    def _describe_sync(
        self, admin: KafkaAdminClient, names: list[str]
    ) -> dict[str, tuple[int, str]]:
        """Existing topics among ``names`` -> (partition count, topic id)."""
        found: dict[str, tuple[int, str]] = {}
        for described in admin.describe_topics(names):
            code = described.get("error_code", 0)
            if code == kafka_errors.UnknownTopicOrPartitionError.errno:
                continue
            if code != 0:
                raise kafka_errors.for_code(code)(f"describing topic {described.get('name')}")
            found[described["name"]] = (
                len(described.get("partitions") or []),
                _topic_id(described),
            )
        return found

    def _create_sync(self, admin: KafkaAdminClient, names: list[str]) -> None:
        spec = {
            t: {"num_partitions": self.partitions, "replication_factor": self.replication_factor}
            for t in names
        }
        # raise_errors=False: TopicAlreadyExists (another process won the race) is
        # fine; other per-topic errors are raised here.
        result = admin.create_topics(spec, raise_errors=False)
        for topic in result.get("topics", []):
            code = topic.get("error_code", 0)
            if code not in (0, kafka_errors.TopicAlreadyExistsError.errno):
                raise kafka_errors.for_code(code)(
                    f"creating topic {topic.get('name')}: {topic.get('error_message')}"
                )
        admin.wait_for_topics(names, timeout_ms=self.request_timeout_ms)

    @_unavailable_on_failure
    async def ensure_topics(
        self, topics: Iterable[str] | None = None, *, verify: bool = False
    ) -> None:
        """Create the topics at start-up (idempotent). ``TopicLayoutError`` if one
        exists with another partition count."""
        if self._closed:
            raise BackendUnavailable("kafka", "closed")
        await self._in(self._admin_executor, lambda: self.ensure_topics_sync(topics, verify=verify))

    @_unavailable_on_failure
    async def start(self) -> None:
        """Create the topics and the producer now rather than on first use."""
        await self.ensure_topics()
        await self._get_producer()

    async def _in(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    # --------------------------------------------------------------- producer

    def _new_producer(self) -> KafkaProducer:
        settings = {
            **_only_known(KafkaProducer, self.client_settings),
            **self._common(),
            "acks": "all",  # idempotent producer (3.x default) needs all
            "linger_ms": self.linger_ms,
            "compression_type": None,
            "max_block_ms": self.max_block_ms,
            "delivery_timeout_ms": self.delivery_timeout_ms,
            "allow_auto_create_topics": False,
        }
        producer = KafkaProducer(**settings)
        _forbid_auto_create(producer)
        return producer

    async def _get_producer(self) -> KafkaProducer:
        if self._closed:
            raise BackendUnavailable("kafka", "closed")
        if self._producer is not None and self._producer_epoch != self._epoch:
            # The broker lost its state: our producer id means nothing to it any more.
            self._drop_producer(self._producer, "the broker lost its topics")
        if self._producer is not None:
            return self._producer
        async with self._producer_lock:
            if self._producer is None:
                epoch = self._epoch
                self._producer = await self._in(self._send_executor, self._new_producer)
                self._producer_epoch = epoch
                self._producer_failures = 0
            return self._producer

    def _drop_producer(self, producer: KafkaProducer, reason: str) -> None:
        """Forget a broken producer (the next publish creates another) and close it in
        the background: closing waits for its in-flight records, at most their
        delivery timeout."""
        if self._producer is not producer or self._closed:
            return  # a concurrent publish replaced it already, or close() closes it
        self._producer = None
        log.warning("replacing the kafka producer: %s", reason)
        grace = self.delivery_timeout_ms / 1000
        self._dispose_executor.submit(_close_quietly, producer, grace)

    def _publish_failed(self, producer: KafkaProducer, exc: BaseException) -> None:
        self._note_failure()
        self._producer_failures += 1
        if _producer_is_broken(exc, self._producer_failures):
            self._drop_producer(
                producer, f"{self._producer_failures} failed publishes in a row, last {exc!r}"
            )

    # ---------------------------------------------------------------- publish

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await self.publish_many(topic, [(key, value)])

    @_unavailable_on_failure_or_layout
    async def publish_many(self, topic: str, records: list[tuple[str, bytes]]) -> None:
        """Returns once the broker acked every record (acks=all); raises otherwise."""
        if not records:
            return
        if self._closed:
            raise BackendUnavailable("kafka", "closed")
        if self._topics_suspect or topic not in self._ensured:
            # After a failure, first see whether the topics still exist: a broker that
            # came back without them answers "unknown topic" until they are created.
            await self.ensure_topics([topic], verify=self._topics_suspect)
        producer = await self._get_producer()
        try:
            await self._send(producer, topic, records)
        except (kafka_errors.KafkaError, OSError) as exc:
            self._publish_failed(producer, exc)
            raise
        self._producer_failures = 0

    async def _send(
        self, producer: KafkaProducer, topic: str, records: list[tuple[str, bytes]]
    ) -> None:
        def send_all() -> list[KafkaFuture]:
            # Keyed by conversation id: one partition, hence one router, per conversation.
            return [producer.send(topic, key=k.encode(), value=v) for k, v in records]

        kafka_futures = await self._in(self._send_executor, send_all)
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(_bridge(loop, f) for f in kafka_futures))

    # --------------------------------------------------------------- consume

    def consumer(self, topics: list[str], group: str, background: bool = False) -> KafkaBusConsumer:
        if self._closed:
            raise BackendUnavailable("kafka", "closed")
        consumer = KafkaBusConsumer(self, list(topics), group, background)
        self._consumers.add(consumer)
        return consumer

    def _consumer_settings(self, group: str, background: bool = False) -> dict[str, Any]:
        return {
            **_only_known(KafkaConsumer, self.client_settings),
            **self._common(),
            "group_id": group,
            "enable_auto_commit": False,  # commit only after the store write
            # Tansu's "latest" offsets are wrong; a new group starts at the beginning,
            # and so does a position beyond the end of a log (a broker that lost it).
            "auto_offset_reset": "earliest",
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            # A background follower (membership events) can wait: polling every 10 ms
            # costs each idle process a fifth of a core.
            "fetch_max_wait_ms": BACKGROUND_FETCH_WAIT_MS if background else self.fetch_max_wait_ms,
            "max_poll_records": self.max_poll_records,
            "max_poll_interval_ms": self.max_poll_interval_ms,
            "allow_auto_create_topics": False,
        }

    # ---------------------------------------------------------------- health

    def _health_sync(self) -> bool:
        # Reachable, topics as the settings say; re-creates lost topics on the way, so
        # an idle process heals too.
        self.ensure_topics_sync(verify=True)
        return True

    async def healthy(self) -> bool:
        """Topics reachable and as the settings say, within ``health_timeout`` seconds."""
        if self._closed:
            return False
        if self._health is not None and not self._health.done():
            return False  # the previous check is still hanging: the broker is not fine
        self._health = self._admin_executor.submit(self._health_sync)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(self._health), self.health_timeout)
        except TopicLayoutError as exc:
            log.error("kafka health check failed: %s", exc)
            return False
        except Exception as exc:
            self._note_failure()  # the next publish looks at the topics first
            log.warning("kafka health check failed: %r", exc)
            return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for consumer in list(self._consumers):
            await consumer.close()
        producer, admin = self._producer, self._admin
        if producer is not None:
            # Flushes what is in flight (its callers are still waiting for acks).
            await self._in(self._send_executor, lambda: _close_quietly(producer, 5))
        if admin is not None:
            await self._in(self._admin_executor, admin.close)
        self._send_executor.shutdown(wait=False)
        self._admin_executor.shutdown(wait=False)
        # Producers being disposed of finish by themselves, within their delivery timeout.
        self._dispose_executor.shutdown(wait=False)


def _close_quietly(producer: KafkaProducer, timeout: float) -> None:
    """Close a producer, waiting up to ``timeout`` s for its in-flight records."""
    try:
        producer.close(timeout=timeout)
        return
    except Exception as exc:
        # kafka-python's close gives up (KafkaTimeoutError) when its flush outlasts the
        # timeout, before it stops the sender thread: stop that without sending (the
        # records still waiting fail), then close again.
        log.info("kafka producer did not close within %s s (%r); forcing it", timeout, exc)
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
    try:
        producer.close(timeout=timeout)
    except Exception as exc:
        log.warning("kafka producer could not be closed: %r", exc)


class _GenerationListener(ConsumerRebalanceListener):
    """Bumps the consumer's generation on every assignment change, notes when a join
    started and ended, and asks for a look at the topics (a rejoin is what a broker
    restart looks like from here). Runs on kafka's IO thread: it only sets numbers and
    flags, never calls back into the consumer."""

    def __init__(self, owner: KafkaBusConsumer) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._owner._joining_since = time.monotonic()  # revoked: a (re)join begins
        if revoked:
            self._owner._generation += 1
            self._owner._check_topics = True

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner._joining_since = None
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

    @property
    def generation(self) -> int:
        return self._generation

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
            _forbid_auto_create(consumer)
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

    def _poll_failed(self, exc: BaseException) -> None:
        self._bus._note_failure()
        self._check_topics = True
        self._poll_failures += 1
        if not _transient(exc) or self._poll_failures >= CONSUMER_FAILURE_LIMIT:
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

    @_unavailable_on_failure_or_layout
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

    @_unavailable_on_failure
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


def from_url(url: str, settings: Settings, client_id: str = "im", **overrides: Any) -> KafkaBus:
    """``kafka://h1:9092,h2:9092[?session_timeout_ms=6000&...]`` -> KafkaBus for the
    settings' topics and partition count. Query parameters (see ``_URL_INT_SETTINGS``,
    plus ``client_id``) and ``overrides`` replace the defaults."""
    parsed = urlparse(url)
    if parsed.scheme != "kafka" or not parsed.netloc:
        raise ValueError(f"not a kafka:// URL: {url!r}")
    options: dict[str, Any] = {}
    for name, value in parse_qsl(parsed.query):
        if name == "client_id":
            client_id = value
        elif name in _URL_INT_SETTINGS:
            options[name] = int(value)
        else:
            raise ValueError(f"unknown kafka URL option {name!r}")
    options.update(overrides)
    return KafkaBus(
        parsed.netloc,
        settings.topic_partitions,
        [settings.topic_messages, settings.topic_cursors, settings.topic_membership],
        client_id,
        **options,
    )
