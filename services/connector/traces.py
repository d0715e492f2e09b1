"""The connector's spans of a message's trace: ``connector send`` from a Send until
the bus took it (its traceparent goes into the bus record), and ``connector deliver``
when the router's Deliver reached this connector (child of the router's span).

Only called when ``tracing.enabled``: without a collector no span exists.
"""

from __future__ import annotations

from im import tracing
from im.v1 import bus_pb2, connector_pb2, wire_pb2
from services.connector.conn import Conn


def send_span(conn: Conn, send: wire_pb2.Send) -> tracing.Span:
    """A Send accepted for publishing: the root of its message's trace."""
    return tracing.start(
        "connector send",
        kind=tracing.SpanKind.PRODUCER,
        attributes={
            "im.conn_id": conn.conn_id,
            "im.user_id": conn.user_id,
            "im.device_id": conn.device_id,
            "im.conversation_id": send.conversation_id,
            "im.client_msg_id": send.client_msg_id,
        },
    )


def into_record(span: tracing.Span, inbound: bus_pb2.InboundMessage) -> None:
    """The bus record carries the Send's trace context to the router."""
    span.set_attribute("im.msg_id", inbound.message.msg_id)
    inbound.traceparent = tracing.traceparent(span)


def settled(span: tracing.Span, published: bool) -> None:
    if not published:
        tracing.fail(span, "not published: answered UNAVAILABLE")
    span.end()


def delivered(delivery: connector_pb2.Delivery, pushed: int) -> None:
    """One message of a Deliver call was written to ``pushed`` of its target sockets."""
    message = delivery.message
    span = tracing.start(
        "connector deliver",
        delivery.traceparent,
        tracing.SpanKind.CONSUMER,
        {
            "im.msg_id": message.msg_id,
            "im.conversation_id": message.conversation_id,
            "im.seq": message.seq,
            "im.targets": len(delivery.targets),
            "im.pushed": pushed,
        },
    )
    span.end()
