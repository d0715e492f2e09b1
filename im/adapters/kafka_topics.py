"""The topics side of the Kafka bus: create them with their final partition count,
refuse a topic with another count, and notice when the broker lost topics it had (gone,
or created again with a new topic id), which moves the bus's ``epoch``.

A mixin of ``KafkaBus`` (kafka_bus.py), which holds the state these methods keep:
``_ensured``, ``_mismatched``, ``_epoch``, ``_losses``, ``_verified_at``, ``_failed_at``
and the locks. Blocking calls run on the bus's admin thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kafka.errors as kafka_errors
from kafka.admin import KafkaAdminClient

from im.adapters.kafka_common import TopicLayoutError, unavailable_on_failure
from im.ports import BackendUnavailable

log = logging.getLogger("im.bus.kafka")

T = TypeVar("T")


def _topic_id(described: dict[str, Any]) -> str:
    """The topic's id (changes when a topic is deleted and created again), or "" when
    the broker does not tell (ids came with Kafka 2.8; all zeros means none)."""
    value = described.get("topic_id")
    text = str(value) if value else ""
    return text if text.strip("0-") else ""


class KafkaTopics:
    """Topic bookkeeping of a KafkaBus (see the module docstring)."""

    topics: list[str]
    partitions: int
    replication_factor: int
    request_timeout_ms: int
    topic_check_interval: float
    _closed: bool
    _admin_executor: ThreadPoolExecutor
    _topics_lock: threading.Lock
    _ensured: dict[str, str]
    _mismatched: dict[str, tuple[int, float]]
    _epoch: int
    _losses: list[frozenset[str]]
    _verified_at: float
    _failed_at: float

    def _admin_sync(self) -> KafkaAdminClient:
        raise NotImplementedError

    async def _in(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

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

    def known_topic_id(self, topic: str) -> str:
        """The id of the topic as we last ensured it ("" if unknown)."""
        with self._topics_lock:
            return self._ensured.get(topic) or ""

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

    @unavailable_on_failure
    async def ensure_topics(
        self, topics: Iterable[str] | None = None, *, verify: bool = False
    ) -> None:
        """Create the topics at start-up (idempotent). ``TopicLayoutError`` if one
        exists with another partition count."""
        if self._closed:
            raise BackendUnavailable("kafka", "closed")
        await self._in(self._admin_executor, lambda: self.ensure_topics_sync(topics, verify=verify))
