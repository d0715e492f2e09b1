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

Topics (kafka_topics.py) are created by this adapter with their final partition count (Tansu has no
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
import weakref
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlparse

import kafka.errors as kafka_errors
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.partitioner.default import murmur2

from im.adapters.kafka_common import (
    TopicLayoutError,
    forbid_auto_create,
    only_known,
    transient,
    unavailable_on_failure,
    unavailable_on_failure_or_layout,
)
from im.adapters.kafka_consumer import KafkaBusConsumer
from im.adapters.kafka_topics import KafkaTopics
from im.buspack import Packer, by_partition
from im.ports import BackendUnavailable

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
# Consecutive failures after which the producer is replaced even if each failure
# looked transient: kafka-python can stay stuck behind errors that it retries forever.
PRODUCER_FAILURE_LIMIT = 3


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


def _quiet(future: asyncio.Future[Any]) -> None:
    """Take a background attempt's error (its caller logged it, or gave up waiting)."""
    if not future.cancelled():
        future.exception()


def _producer_is_broken(exc: BaseException, consecutive_failures: int) -> bool:
    if isinstance(exc, _FATAL_PRODUCER_ERRORS):
        return True
    # The producer's own InitProducerId failures arrive as a plain KafkaError and
    # leave it in a fatal state that fails every later send.
    if "InitProducerId" in str(exc):
        return True
    return not transient(exc) or consecutive_failures >= PRODUCER_FAILURE_LIMIT


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


class KafkaBus(KafkaTopics):
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
        fetch_max_wait_ms: int = 500,
        max_poll_records: int = 500,
        max_poll_interval_ms: int = 300_000,
        linger_ms: int = 0,
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
        # Kafka answers a waiting fetch as soon as data arrives, so an idle consumer can
        # wait long (Kafka's own default, 500 ms) at no cost in latency. Tansu does not
        # wake a waiting fetch: its latency follows this, hence ?fetch_max_wait_ms=10
        # in the URLs of the local cluster and the tests (an idle consumer then polls
        # a hundred times a second).
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.max_poll_records = max_poll_records
        self.max_poll_interval_ms = max_poll_interval_ms
        # No linger: the connector already sends what gathered during a flight as one
        # record per partition, and an idle one should not wait for company.
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
        self._making_producer: asyncio.Future[KafkaProducer] | None = None  # producer_ready
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
                settings = {**only_known(KafkaAdminClient, self.client_settings), **self._common()}
                self._admin = KafkaAdminClient(**settings)
            return self._admin

    @unavailable_on_failure
    async def start(self) -> None:
        """Create the topics and the producer now rather than on first use."""
        await self.ensure_topics()
        await self._get_producer()

    async def _in(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    # --------------------------------------------------------------- producer

    def _new_producer(self) -> KafkaProducer:
        settings = {
            **only_known(KafkaProducer, self.client_settings),
            **self._common(),
            "acks": "all",  # idempotent producer (3.x default) needs all
            "linger_ms": self.linger_ms,
            "compression_type": None,
            "max_block_ms": self.max_block_ms,
            "delivery_timeout_ms": self.delivery_timeout_ms,
            "allow_auto_create_topics": False,
        }
        producer = KafkaProducer(**settings)
        forbid_auto_create(producer)
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

    @unavailable_on_failure_or_layout
    async def publish_many(self, topic: str, records: list[tuple[str, bytes]]) -> None:
        """Returns once the broker acked every record (acks=all); raises otherwise."""
        await self._publish(topic, records, None)

    @unavailable_on_failure_or_layout
    async def publish_packed(
        self, topic: str, records: list[tuple[str, bytes]], pack: Packer
    ) -> None:
        """publish_many with one record per partition (see the port)."""
        await self._publish(topic, records, pack)

    async def _publish(
        self, topic: str, records: list[tuple[str, bytes]], pack: Packer | None
    ) -> None:
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
            await self._send(producer, topic, records, pack)
        except (kafka_errors.KafkaError, OSError) as exc:
            self._publish_failed(producer, exc)
            raise
        self._producer_failures = 0

    async def _send(
        self,
        producer: KafkaProducer,
        topic: str,
        records: list[tuple[str, bytes]],
        pack: Packer | None,
    ) -> None:
        def send_all() -> list[KafkaFuture]:
            # Keyed by conversation id: one partition, hence one router, per conversation.
            if pack is None:
                return [producer.send(topic, key=k.encode(), value=v) for k, v in records]
            # The producer's own partitioner, so a packed record lands where its
            # records would have one by one (partitions_for may wait for metadata).
            partitions = sorted(producer.partitions_for(topic))

            def partition_of(key: str) -> int:
                return partitions[(murmur2(key.encode()) & 0x7FFFFFFF) % len(partitions)]

            return [
                producer.send(topic, key=key.encode(), value=value, partition=partition)
                for partition, key, value in by_partition(records, partition_of, pack)
            ]

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
            **only_known(KafkaConsumer, self.client_settings),
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

    async def producer_ready(self) -> bool:
        """A producer is in place, created now if there was none (never made, or
        dropped as broken), within ``health_timeout`` seconds: a connector that cannot
        get one answers every Send UNAVAILABLE and must not look ready."""
        if self._closed:
            return False
        if self._producer is not None and self._producer_epoch == self._epoch:
            return True
        # Shielded: a creation that outlasts the timeout goes on and keeps its result
        # (cancelling it would leak the producer it is making on the send thread).
        if self._making_producer is None or self._making_producer.done():
            self._making_producer = asyncio.ensure_future(self._get_producer())
            self._making_producer.add_done_callback(_quiet)
        try:
            await asyncio.wait_for(asyncio.shield(self._making_producer), self.health_timeout)
        except Exception as exc:
            log.warning("no kafka producer: %r", exc)
            return False
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for consumer in list(self._consumers):
            await consumer.close()
        making = self._making_producer
        if making is not None and not making.done():
            # Its producer is closed below with the rest, not left running.
            await asyncio.wait([making], timeout=self.bootstrap_timeout_ms / 1000 + 1)
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
