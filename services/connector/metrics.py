"""The connector's Prometheus metrics, read at scrape time from what the core counts
(``ConnectorStats``, ``SendStats``) and from its live connections: the frame path only
adds to integers.

- ``im_connector_connections{transport,authed}``: open client sockets.
- ``im_connector_frames_total{direction,kind}``: frames read (by Frame kind, and
  ``undecodable`` streams) and written.
- ``im_connector_send_ack_seconds``: a Send's arrival to its SendAck being written.
- ``im_connector_deliveries_total``, ``im_connector_retransmits_total``,
  ``im_connector_delivery_give_ups_total``: Deliver frames pushed, resent, abandoned
  (the message waits for sync).
- ``im_connector_kicks_total{reason}``.
- ``im_connector_outbox_bytes{transport}``, ``im_connector_outbox_max_bytes``: bytes
  queued for clients (all, and the largest one: a slow reader nearing the limit).
- ``im_connector_sends_refused_total``, ``im_connector_sends_in_flight``,
  ``im_connector_router_lag_seconds``: admission control (Sends refused BUSY under
  overload, Sends waiting for the bus, the worst lag a router reported lately).
- ``im_connector_typing_total{outcome}``, ``im_connector_presence_total{event}``,
  ``im_connector_signals_total{outcome}``: Typing frames (relayed, rate_limited,
  refused...), presence announcements made here, and signal relaying.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from im.metrics import MetricsRegistry, StatsCollector, histogram_family
from im.v1 import wire_pb2
from services.connector.service import ConnectorCore

TRANSPORTS = ("tcp", "ws")
_KICK_PREFIX = "KICK_REASON_"


def kick_label(reason: int) -> str:
    name = wire_pb2.KickReason.Name(reason)
    return name.removeprefix(_KICK_PREFIX).lower()


def register(metrics: MetricsRegistry, core: ConnectorCore) -> StatsCollector:
    return metrics.collect_stats(lambda: families(core))


def families(core: ConnectorCore) -> Iterator[Any]:
    stats = core.stats
    sends = core.sends.stats
    yield from _connections(core)

    frames = CounterMetricFamily(
        "im_connector_frames",
        "Client frames read (in) and written (out), by kind.",
        labels=["direction", "kind"],
    )
    for kind, n in stats.frames_in.items():
        frames.add_metric(["in", kind or "empty"], n)
    frames.add_metric(["in", "undecodable"], stats.bad_frames)
    written = {
        "auth_ok": stats.authenticated,
        "pong": stats.pongs,
        "send_ack": sends.send_acks,
        "deliver": stats.delivered + stats.retransmits,
        "receipt": stats.receipts,
        "error": stats.errors,
        "kick": sum(stats.kicks.values()),
    }
    for kind, n in written.items():
        frames.add_metric(["out", kind], n)
    frames.add_metric(["out", "signal"], core.signals.stats.pushed)
    yield frames
    yield from _signals(core)

    yield histogram_family(
        "im_connector_send_ack_seconds",
        "Seconds from a Send's arrival to its SendAck being written (the bus took it).",
        [((), sends.ack_seconds)],
    )
    yield _counter("im_connector_deliveries", "Deliver frames written to devices.", stats.delivered)
    yield _counter(
        "im_connector_retransmits", "Deliver frames resent for want of an ack.", stats.retransmits
    )
    yield _counter(
        "im_connector_delivery_give_ups",
        "Deliveries abandoned after the last resend (the message waits for sync).",
        stats.gave_up,
    )
    kicks = CounterMetricFamily(
        "im_connector_kicks", "Connections ended with a Kick, by reason.", labels=["reason"]
    )
    for reason, n in stats.kicks.items():
        kicks.add_metric([kick_label(reason)], n)
    yield kicks
    yield from _admission(core)


def _admission(core: ConnectorCore) -> Iterator[Any]:
    admission = core.sends.admission
    yield _counter(
        "im_connector_sends_refused",
        "Sends refused at once with BUSY (overload: too many waiting for the bus, or a "
        "router lagging).",
        admission.refused,
    )
    yield GaugeMetricFamily(
        "im_connector_sends_in_flight",
        "Sends received and not yet answered (waiting for the bus).",
        value=admission.inflight,
    )
    yield GaugeMetricFamily(
        "im_connector_router_lag_seconds",
        "The worst lag a router reported with its deliveries in the last seconds.",
        value=admission.lag_ms(core.clock.monotonic()) / 1000,
    )


def _connections(core: ConnectorCore) -> Iterator[Any]:
    """One pass over the live connections: counts and queued bytes."""
    open_ = {(t, a): 0 for t in TRANSPORTS for a in ("true", "false")}
    queued = dict.fromkeys(TRANSPORTS, 0)
    largest = 0
    for conn in core.conns.values():
        key = (conn.kind, "true" if conn.authed else "false")
        open_[key] = open_.get(key, 0) + 1
        try:
            size = conn.queued_bytes()
        except Exception:  # a socket closing under us: nothing to count
            size = 0
        queued[conn.kind] = queued.get(conn.kind, 0) + size
        largest = max(largest, size)
    connections = GaugeMetricFamily(
        "im_connector_connections",
        "Open client connections, by transport and whether they authenticated.",
        labels=["transport", "authed"],
    )
    for (transport, authed), n in open_.items():
        connections.add_metric([transport, authed], n)
    yield connections
    outbox = GaugeMetricFamily(
        "im_connector_outbox_bytes",
        "Bytes written to client sockets and not yet taken by the clients, by transport.",
        labels=["transport"],
    )
    for transport, n in queued.items():
        outbox.add_metric([transport], n)
    yield outbox
    yield GaugeMetricFamily(
        "im_connector_outbox_max_bytes",
        "Bytes queued for the connection with the most (a client that does not read is "
        "closed past IM_MAX_OUTBOX_BYTES).",
        value=largest,
    )


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _signals(core: ConnectorCore) -> Iterator[Any]:
    typing = core.typing.stats
    family = CounterMetricFamily(
        "im_connector_typing", "Typing frames received, by what became of them.", labels=["outcome"]
    )
    for outcome in ("received", "relayed", "rate_limited", "overloaded", "refused", "failures"):
        family.add_metric([outcome], getattr(typing, outcome))
    yield family
    presence = core.presence_notes.stats
    family = CounterMetricFamily(
        "im_connector_presence",
        "Presence changes this connector handled (announced online/offline, offlines a "
        "reconnect cancelled, dropped onlines, put-off offlines, failed steps).",
        labels=["event"],
    )
    for event in ("online", "offline", "debounced", "dropped", "deferred", "failures"):
        family.add_metric([event], getattr(presence, event))
    yield family
    signals = core.signals.stats
    family = CounterMetricFamily(
        "im_connector_signals",
        "Signals (typing, presence) handed to connectors, dropped on a full lane, failed.",
        labels=["outcome"],
    )
    for outcome in ("sent", "dropped", "failures"):
        family.add_metric([outcome], getattr(signals, outcome))
    yield family
