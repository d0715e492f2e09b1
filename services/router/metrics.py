"""The router's Prometheus metrics, read at scrape time from what it counts
(``RouterStats``, ``DeliveryStats``, ``Sequencer.conflicts``) and from its consumer.

- ``im_router_records_total{outcome}``: inbound messages ``stored``, recognised as a
  ``replay`` (stored before), or ``dead_lettered`` (any record set aside).
- ``im_router_batch_size``: records per poll.
- ``im_router_store_seconds``: numbering and storing a batch's messages.
- ``im_router_delivery_seconds``: a message's server_ts to its Deliver being handed to
  a connector (per connector).
- ``im_router_consumer_lag{topic,partition}``: records on the bus not yet taken, per
  assigned partition (Kafka: as of its last look, every few seconds).
- ``im_router_seq_conflicts_total``: seq already taken in the store (a stale counter
  after a rebalance; the counter is reseeded).
- ``im_router_push_notifications_total{outcome}``: offline push (when configured):
  ``queued`` for the webhook, ``sent`` (accepted), ``failed`` (refused, retries used
  up, or the mute check failed), ``dropped`` (a full queue), ``muted`` (skipped),
  ``recalled`` (taken back before it left: its message was recalled).
- ``im_router_delivery_failures_total``, ``im_router_delivery_dropped_total``: Deliver
  calls that failed, and outboxes a lagging connector had no room for (both wait for
  sync).
- ``im_router_attachment_links_total{outcome}``: attachment links ``linked``,
  ``refused`` (the sender did not own the attachment) and link calls ``failed``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from im.metrics import MetricsRegistry, StatsCollector, histogram_family
from im.ports import BusConsumer
from services.router.push import PushDispatcher
from services.router.service import Router


def register(
    metrics: MetricsRegistry, router: Router, consumer: Callable[[], BusConsumer | None]
) -> StatsCollector:
    """``consumer``: the router's current consumer (None before start)."""
    return metrics.collect_stats(lambda: families(router, consumer()))


def families(router: Router, consumer: BusConsumer | None) -> Iterator[Any]:
    stats = router.stats
    delivery = router.delivery.stats
    records = CounterMetricFamily(
        "im_router_records",
        "Inbound records by outcome: messages stored or recognised as a replay, and "
        "records set aside as dead letters.",
        labels=["outcome"],
    )
    records.add_metric(["stored"], stats.stored)
    records.add_metric(["replay"], stats.replayed)
    records.add_metric(["dead_lettered"], stats.dead_lettered)
    yield records
    yield histogram_family(
        "im_router_batch_size", "Records per poll of the bus.", [((), stats.batch_sizes)]
    )
    yield histogram_family(
        "im_router_store_seconds",
        "Seconds to number and store a batch's messages.",
        [((), stats.store_seconds)],
    )
    yield histogram_family(
        "im_router_delivery_seconds",
        "Seconds from a message's server_ts (its SendAck) to its Deliver being handed to "
        "a connector.",
        [((), delivery.seconds)],
    )
    lag = GaugeMetricFamily(
        "im_router_consumer_lag",
        "Records on the bus this router has not taken yet, per assigned partition.",
        labels=["topic", "partition"],
    )
    if consumer is not None:
        for (topic, partition), n in sorted(consumer.lag().items()):
            lag.add_metric([topic, str(partition)], n)
    yield lag
    if router.linker is not None:
        links = CounterMetricFamily(
            "im_router_attachment_links",
            "Attachment links by outcome: linked, refused (not the sender's), failed calls.",
            labels=["outcome"],
        )
        links.add_metric(["linked"], router.linker.stats.linked)
        links.add_metric(["refused"], router.linker.stats.refused)
        links.add_metric(["failed"], router.linker.stats.failures)
        yield links
    yield CounterMetricFamily(
        "im_router_seq_conflicts",
        "Seqs the store already held (a stale counter, reseeded from the store).",
        value=router.sequencer.conflicts,
    )
    yield CounterMetricFamily(
        "im_router_delivery_failures",
        "Deliver calls to a connector that failed (the messages wait for sync).",
        value=delivery.delivery_failures,
    )
    if router.push is not None:
        yield _push_family(router.push)
    yield CounterMetricFamily(
        "im_router_delivery_dropped",
        "Deliver batches dropped for a connector too far behind (they wait for sync).",
        value=delivery.dropped,
    )


def _push_family(push: PushDispatcher) -> CounterMetricFamily:
    sent = push.notifier.stats
    family = CounterMetricFamily(
        "im_router_push_notifications",
        "Offline push notifications by outcome: queued for the webhook, sent (accepted), "
        "failed (refused, retries used up, or the mute check failed), dropped (a full "
        "queue), muted (the member muted the conversation), recalled (taken back before "
        "it left: its message was recalled).",
        labels=["outcome"],
    )
    family.add_metric(["queued"], sent.queued)
    family.add_metric(["sent"], sent.sent)
    family.add_metric(["failed"], sent.failed + push.stats.failed)
    family.add_metric(["dropped"], sent.dropped + push.stats.dropped)
    family.add_metric(["muted"], push.stats.muted)
    family.add_metric(["recalled"], push.stats.recalled + sent.withdrawn)
    return family
