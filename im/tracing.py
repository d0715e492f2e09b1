"""Traces (OpenTelemetry), recorded only when there is somewhere to send them.

With ``IM_OTLP_ENDPOINT`` set, spans are exported over OTLP/gRPC (batched, from a
background thread). Unset, ``enabled`` stays False and nothing is created: the hot
paths (a Send, a router batch, a Deliver) test that flag before anything else, so a
suite without a collector pays one attribute look-up per message, not a no-op span.

The trace context is W3C ``traceparent`` everywhere: in gRPC metadata (``grpcctx``),
in the bus record of a message (``InboundMessage.traceparent``) and in each delivery
of a Deliver call (``Delivery.traceparent``). The SDK's own ``OTEL_*`` variables
apply too (e.g. ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

# Read it as ``tracing.enabled`` (``from im.tracing import enabled`` copies it once).
enabled = False
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None
_propagator = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"


def setup(endpoint: str, service: str) -> None:
    """Export spans to the OTLP/gRPC collector at ``endpoint`` (``http://`` plaintext,
    ``https://`` TLS); an empty endpoint records nothing."""
    if not endpoint:
        return
    # Imported here: a process without a collector never loads the exporter.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Our own provider, not the global one: libraries that trace through the global
    # API (FastAPI's native telemetry would add a second HTTP span per request) stay
    # quiet; the suite's spans are the ones listed in docs/operations.md.
    configure(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)), service)


def configure(processor: SpanProcessor, service: str = "") -> TracerProvider:
    """Record spans into ``processor`` from now on (tests pass an in-memory exporter's)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    global enabled, _tracer, _provider
    attributes: dict[str, Any] = {}
    if "OTEL_SERVICE_NAME" not in os.environ:
        attributes["service.name"] = f"im-{service}" if service else "im"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(processor)
    _provider, _tracer, enabled = provider, provider.get_tracer("im"), True
    return provider


def disable() -> None:
    """Stop recording (flushes what was recorded)."""
    global enabled, _tracer, _provider
    provider, _provider = _provider, None
    enabled, _tracer = False, trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


# ---------------------------------------------------------------- propagation


def traceparent(span: Span | None = None) -> str:
    """The W3C traceparent of ``span`` (else of the current span); "" without one."""
    carrier: dict[str, str] = {}
    context = trace.set_span_in_context(span) if span is not None else None
    _propagator.inject(carrier, context=context)
    return carrier.get(TRACEPARENT, "")


def context_of(parent: str) -> Context | None:
    """The context a traceparent names (None for "" or a malformed one: a new trace)."""
    if not parent:
        return None
    context = _propagator.extract({TRACEPARENT: parent})
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def start(
    name: str,
    parent: str = "",
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict[str, Any] | None = None,
) -> Span:
    """A started span, child of the ``parent`` traceparent when given, else of the
    current span. Callers check ``enabled`` first and ``end()`` it."""
    context = context_of(parent) if parent else None
    return _tracer.start_span(name, context=context, kind=kind, attributes=attributes)


def activate(span: Span) -> Any:
    """Make ``span`` current for a ``with`` block (calls made there carry it) and end
    it at the block's end, failed if the block raised."""
    return trace.use_span(span, end_on_exit=True)


def fail(span: Span, description: str) -> None:
    span.set_status(Status(StatusCode.ERROR, description))


def current_ids() -> dict[str, str]:
    """trace_id and span_id of the current span, for log lines; {} outside one."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
