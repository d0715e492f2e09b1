"""What the Kafka bus (``kafka_bus``) and its consumers (``kafka_consumer``) share:
client settings, errors, and how kafka-python's errors leave the adapter."""

from __future__ import annotations

import logging
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaConsumer, KafkaProducer

from im.adapters.errors import unavailable_on

log = logging.getLogger("im.bus.kafka")


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


def only_known(cls: type, settings: dict[str, Any]) -> dict[str, Any]:
    """The subset of extra client settings this kafka-python class accepts (each class
    rejects unknown keys, and e.g. ``sasl_*`` apply to all three but ``linger_ms`` only
    to the producer)."""
    known = cls.DEFAULT_CONFIG  # type: ignore[attr-defined]
    return {k: v for k, v in settings.items() if k in known}


def forbid_auto_create(client: KafkaProducer | KafkaConsumer) -> None:
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


def transient(exc: BaseException) -> bool:
    """An error that kafka-python retries by itself or that a reconnect cures."""
    return isinstance(exc, (kafka_errors.RetriableError, OSError))


# kafka-python's errors (KafkaError, with KafkaTimeoutError for a broker that cannot be
# reached in time, from the client's creation, the call or the broker's answer) and
# socket errors: the bus is down, try later.
unavailable_on_failure = unavailable_on("kafka", (kafka_errors.KafkaError, OSError))
# Publish and poll also refuse a topic with the wrong partition count that way (at
# start it is a TopicLayoutError of its own, to stop the process loudly).
unavailable_on_failure_or_layout = unavailable_on(
    "kafka", (kafka_errors.KafkaError, OSError, TopicLayoutError)
)
