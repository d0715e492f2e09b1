"""Traces: nothing is recorded without an exporter; W3C traceparents link spans across
processes (as the bus record and gRPC metadata carry them)."""

from __future__ import annotations

from im import tracing


def test_without_an_endpoint_nothing_is_recorded() -> None:
    tracing.setup("", "router")
    assert tracing.enabled is False
    span = tracing.start("nothing")
    assert not span.is_recording()
    assert tracing.traceparent(span) == ""


def test_a_traceparent_makes_the_next_span_a_child(recorded_spans) -> None:  # type: ignore[no-untyped-def]
    parent = tracing.start("connector send", kind=tracing.SpanKind.PRODUCER)
    carried = tracing.traceparent(parent)
    assert carried.startswith("00-") and len(carried.split("-")) == 4
    child = tracing.start("router route", carried, tracing.SpanKind.CONSUMER)
    child.end()
    parent.end()
    by_name = {s.name: s for s in recorded_spans.get_finished_spans()}
    send, route = by_name["connector send"], by_name["router route"]
    assert route.context.trace_id == send.context.trace_id
    assert route.parent is not None and route.parent.span_id == send.context.span_id
    assert route.resource.attributes["service.name"] == "im-test"


def test_a_malformed_traceparent_starts_a_new_trace(recorded_spans) -> None:  # type: ignore[no-untyped-def]
    assert tracing.context_of("00-garbage") is None
    span = tracing.start("fresh", "00-garbage")
    span.end()
    assert recorded_spans.get_finished_spans()[0].parent is None


def test_the_current_span_is_what_calls_carry(recorded_spans) -> None:  # type: ignore[no-untyped-def]
    assert tracing.traceparent() == ""
    span = tracing.start("request")
    with tracing.activate(span):
        assert tracing.traceparent() == tracing.traceparent(span) != ""
        assert tracing.current_ids()["span_id"] == format(span.get_span_context().span_id, "016x")
    assert tracing.current_ids() == {}
    assert recorded_spans.get_finished_spans()[0].name == "request"  # ended by the block
