"""Bus on Kafka through kafka-python 3.0.x (blocking client, bridged to asyncio).

kafka-python blocks, so nothing here calls it on the event loop:

- the producer is shared (it is thread safe); ``send`` runs on one dedicated thread
  (it can block on metadata), and the broker's acks come back as kafka futures that
  are bridged into asyncio futures with ``call_soon_threadsafe``;
- each consumer owns one single-thread executor, because ``KafkaConsumer`` is not
  thread safe: every call on it (create, subscribe, poll, commit, seek, close) runs
  on that one thread;
- admin calls (topic creation, health) run on their own thread.

Topics are created by this adapter with their final partition count (Tansu has no
CreatePartitions, and a real cluster should not guess either); producers and
consumers are told not to auto-create, so a missing topic is an error, not a topic
with the broker's default partition count.

Every call is bounded by the bus's timeouts (bootstrap, max_block, request, delivery)
and raises ``BackendUnavailable`` instead of kafka-python's errors.
"""

from __future__ import annotations

import asyncio
import logging
import threading
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


def _only_known(cls: type, settings: dict[str, Any]) -> dict[str, Any]:
    """The subset of extra client settings this kafka-python class accepts (each class
    rejects unknown keys, and e.g. ``sasl_*`` apply to all three but ``linger_ms`` only
    to the producer)."""
    known = cls.DEFAULT_CONFIG  # type: ignore[attr-defined]
    return {k: v for k, v in settings.items() if k in known}


# kafka-python's errors (KafkaError, with KafkaTimeoutError for a broker that cannot be
# reached in time, from the client's creation, the call or the broker's answer) and
# socket errors: the bus is down, try later.
_unavailable_on_failure = unavailable_on("kafka", (kafka_errors.KafkaError, OSError))


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


BACKGROUND_FETCH_WAIT_MS = 500


class KafkaBus:
    """The ``Bus`` port on a Kafka cluster (or a wire-compatible broker such as Tansu).

    ``client_settings`` are extra kafka-python settings (security_protocol, sasl_*,
    ssl_*, ...) handed to every client that accepts them.
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
        self.client_settings = client_settings

        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._producer_lock = asyncio.Lock()
        # send() may block on metadata; one thread keeps the call order of publishes.
        self._send_executor = ThreadPoolExecutor(1, thread_name_prefix=f"{client_id}-send")
        self._admin_executor = ThreadPoolExecutor(1, thread_name_prefix=f"{client_id}-admin")
        self._admin_lock = threading.Lock()
        self._ensured: set[str] = set()
        self._health: ThreadFuture[bool] | None = None
        self._consumers: weakref.WeakSet[KafkaBusConsumer] = weakref.WeakSet()
        self._closed = False

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

    def ensure_topics_sync(self, topics: Iterable[str] | None = None) -> None:
        """Create the topics (default: the configured ones) with their final partition
        count, once per bus. Blocking: call from a worker thread."""
        wanted = list(self.topics if topics is None else topics)
        with self._admin_lock:
            missing = [t for t in dict.fromkeys(wanted) if t not in self._ensured]
        if not missing:
            return
        admin = self._admin_sync()
        spec = {
            t: {"num_partitions": self.partitions, "replication_factor": self.replication_factor}
            for t in missing
        }
        # raise_errors=False: TopicAlreadyExists (another process won the race, or an
        # earlier start) is fine; other per-topic errors are checked below.
        result = admin.create_topics(spec, raise_errors=False)
        for topic in result.get("topics", []):
            code = topic.get("error_code", 0)
            if code not in (0, kafka_errors.TopicAlreadyExistsError.errno):
                raise kafka_errors.for_code(code)(
                    f"creating topic {topic.get('name')}: {topic.get('error_message')}"
                )
        admin.wait_for_topics(missing, timeout_ms=self.request_timeout_ms)
        for described in admin.describe_topics(missing):
            count = len(described.get("partitions") or [])
            if count != self.partitions:
                # No CreatePartitions on Tansu, and changing the count would move
                # conversations between routers: say so loudly, do not "fix" it.
                log.warning(
                    "topic %s has %d partitions, settings say %d",
                    described.get("name"),
                    count,
                    self.partitions,
                )
        with self._admin_lock:
            self._ensured.update(missing)

    @_unavailable_on_failure
    async def ensure_topics(self, topics: Iterable[str] | None = None) -> None:
        """Create the topics at start-up (idempotent)."""
        await self._in(self._admin_executor, self.ensure_topics_sync, topics)

    @_unavailable_on_failure
    async def start(self) -> None:
        """Create the topics and the producer now rather than on first use."""
        await self.ensure_topics()
        await self._get_producer()

    async def _in(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    async def _get_producer(self) -> KafkaProducer:
        if self._closed:
            raise BackendUnavailable("kafka", "closed")
        if self._producer is not None:
            return self._producer
        async with self._producer_lock:
            if self._producer is None:
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
                self._producer = await self._in(
                    self._send_executor, lambda: KafkaProducer(**settings)
                )
            return self._producer

    # ---------------------------------------------------------------- publish

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await self.publish_many(topic, [(key, value)])

    @_unavailable_on_failure
    async def publish_many(self, topic: str, records: list[tuple[str, bytes]]) -> None:
        """Returns once the broker acked every record (acks=all); raises otherwise."""
        if not records:
            return
        if topic not in self._ensured:
            await self.ensure_topics([topic])
        producer = await self._get_producer()

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
            # Tansu's "latest" offsets are wrong; a new group starts at the beginning.
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
        self._admin_sync().describe_cluster()
        return True

    async def healthy(self) -> bool:
        """Cluster metadata reachable within ``health_timeout`` seconds."""
        if self._closed:
            return False
        if self._health is not None and not self._health.done():
            return False  # the previous check is still hanging: the broker is not fine
        self._health = self._admin_executor.submit(self._health_sync)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(self._health), self.health_timeout)
        except Exception as exc:
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
            await self._in(self._send_executor, lambda: producer.close(timeout=5))
        if admin is not None:
            await self._in(self._admin_executor, admin.close)
        self._send_executor.shutdown(wait=False)
        self._admin_executor.shutdown(wait=False)


class _GenerationListener(ConsumerRebalanceListener):
    """Bumps the consumer's generation on every assignment change. Runs on kafka's IO
    thread: it only increments an int, never calls back into the consumer."""

    def __init__(self, owner: KafkaBusConsumer) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            self._owner._generation += 1

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner._generation += 1


class KafkaBusConsumer:
    """One member of a consumer group; all kafka calls on one dedicated thread."""

    def __init__(
        self, bus: KafkaBus, topics: list[str], group: str, background: bool = False
    ) -> None:
        self._bus = bus
        self._background = background
        self.topics = topics
        self.group = group
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"kafka-consumer-{group}")
        self._consumer: KafkaConsumer | None = None  # touched only on the executor thread
        self._generation = 0
        # Next offset to commit per partition: last offset returned by poll + 1.
        self._pending: dict[TopicPartition, int] = {}
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

    def _kafka(self) -> KafkaConsumer:
        """The KafkaConsumer, created (and subscribed) on first use. Executor thread."""
        if self._consumer is None:
            self._bus.ensure_topics_sync(self.topics)
            consumer = KafkaConsumer(**self._bus._consumer_settings(self.group, self._background))
            consumer.subscribe(self.topics, listener=_GenerationListener(self))
            self._consumer = consumer
        return self._consumer

    # ------------------------------------------------------------------ poll

    def _poll_sync(self, max_records: int, timeout: float) -> list[BusRecord]:
        if self._must_rewind:
            self._seek_to_committed()
        batches = self._kafka().poll(
            timeout_ms=max(0, int(timeout * 1000)), max_records=max_records
        )
        out: list[BusRecord] = []
        for tp in sorted(batches, key=lambda tp: (tp.topic, tp.partition)):
            for r in batches[tp]:
                key = r.key.decode("utf-8", "replace") if r.key is not None else ""
                out.append(BusRecord(tp.topic, tp.partition, r.offset, key, r.value or b""))
        return out

    def _hand_out(self, records: list[BusRecord]) -> list[BusRecord]:
        for r in records:
            self._pending[TopicPartition(r.topic, r.partition)] = r.offset + 1
        return records

    @_unavailable_on_failure
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

    def _commit_sync(self, offsets: dict[TopicPartition, int]) -> None:
        consumer = self._kafka()
        assigned = consumer.assignment()
        # A partition revoked since poll belongs to someone else now: its new owner
        # replays from the last commit (the router recognises replays by msg_id).
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
        offsets, self._pending = self._pending, {}
        try:
            await self._run(self._commit_sync, offsets)
        except BaseException:
            # Keep them for the next try, without overwriting newer positions.
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
