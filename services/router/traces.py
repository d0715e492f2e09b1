"""The router's span of a message's trace: ``router route``, child of the Send's span
(its traceparent came in the bus record), from the batch's start until the message
was handed to the connectors; each Delivery carries this span's traceparent, so the
connector's ``connector deliver`` span is its child.

Built only for batches whose records carry a traceparent while traces are recorded.
"""

from __future__ import annotations

from im import tracing
from im.v1 import wire_pb2


class BatchTraces:
    def __init__(self, parents: dict[int, str]) -> None:
        self.spans = {
            msg_id: tracing.start(
                "router route", parent, tracing.SpanKind.CONSUMER, {"im.msg_id": msg_id}
            )
            for msg_id, parent in parents.items()
        }

    def stored(self, messages: list[wire_pb2.Message], replayed: bool) -> None:
        for m in messages:
            span = self.spans.get(m.msg_id)
            if span is not None:
                span.set_attribute("im.conversation_id", m.conversation_id)
                span.set_attribute("im.seq", m.seq)
                span.set_attribute("im.replayed", replayed)

    def rejected(self, message: wire_pb2.Message, reason: str) -> None:
        span = self.spans.pop(message.msg_id, None)
        if span is not None:
            tracing.fail(span, f"dead letter: {reason}")
            span.end()

    def parents(self) -> dict[int, str]:
        """msg_id -> traceparent for the Deliveries."""
        return {msg_id: tracing.traceparent(span) for msg_id, span in self.spans.items()}

    def end(self, failure: str = "") -> None:
        for span in self.spans.values():
            if failure:
                tracing.fail(span, failure)
            span.end()
        self.spans.clear()
