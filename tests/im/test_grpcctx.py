"""Request ids and trace context ride in gRPC metadata: a call made inside a request
carries its id (and, when traces are recorded, its span) to the handler on the other
side, whose log context and server span follow from them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from im import logs, tracing
from im.grpcutil import GrpcServer, channel, service_name
from im.v1 import connector_pb2, connector_pb2_grpc

DELIVER = f"{service_name(connector_pb2, 'ConnectorService')}/Deliver"


class Witness(connector_pb2_grpc.ConnectorServiceServicer):
    """Remembers the log context and trace ids each call ran with."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, Any], dict[str, str]]] = []

    async def Deliver(self, request, context):  # type: ignore[no-untyped-def]
        self.seen.append((dict(logs.current()), tracing.current_ids()))
        return connector_pb2.DeliverResponse()


@pytest.fixture
async def stub() -> AsyncIterator[tuple[connector_pb2_grpc.ConnectorServiceStub, Witness]]:
    server = GrpcServer("127.0.0.1", 0)
    witness = Witness()
    server.add(
        connector_pb2_grpc.add_ConnectorServiceServicer_to_server,
        witness,
        service_name(connector_pb2, "ConnectorService"),
    )
    port = await server.start()
    ch = channel(f"127.0.0.1:{port}")
    try:
        yield connector_pb2_grpc.ConnectorServiceStub(ch), witness
    finally:
        await ch.close()
        await server.stop(0)


async def test_the_request_id_reaches_the_handlers_log_context(stub) -> None:  # type: ignore[no-untyped-def]
    client, witness = stub
    with logs.bound(request_id="req-42", user_id=7):
        await client.Deliver(connector_pb2.DeliverRequest(), timeout=5)
    await client.Deliver(connector_pb2.DeliverRequest(), timeout=5)  # outside any request
    (inside, no_trace), (outside, _) = witness.seen
    assert inside["request_id"] == "req-42"
    assert "user_id" not in inside  # only the request id travels
    assert "request_id" not in outside
    assert no_trace == {}  # traces are not recorded here


async def test_the_handler_runs_in_a_child_of_the_callers_span(stub, recorded_spans) -> None:  # type: ignore[no-untyped-def]
    client, witness = stub
    caller = tracing.start("POST /v1/auth/login", kind=tracing.SpanKind.SERVER)
    with tracing.activate(caller):
        await client.Deliver(connector_pb2.DeliverRequest(), timeout=5)
    await client.Deliver(connector_pb2.DeliverRequest(), timeout=5)  # no trace: no span

    spans = {s.name: s for s in recorded_spans.get_finished_spans()}
    assert set(spans) == {"POST /v1/auth/login", DELIVER}
    server = spans[DELIVER]
    assert server.parent is not None and server.parent.span_id == caller.get_span_context().span_id
    assert server.context.trace_id == caller.get_span_context().trace_id
    assert server.kind == tracing.SpanKind.SERVER
    # The handler's log lines name the server span.
    _, ids = witness.seen[0]
    assert ids["span_id"] == format(server.context.span_id, "016x")


async def test_a_failing_handler_fails_its_span(recorded_spans) -> None:  # type: ignore[no-untyped-def]
    class Failing(connector_pb2_grpc.ConnectorServiceServicer):
        async def Deliver(self, request, context):  # type: ignore[no-untyped-def]
            await context.abort(grpc.StatusCode.UNAVAILABLE, "gone")

    server = GrpcServer("127.0.0.1", 0)
    server.add(
        connector_pb2_grpc.add_ConnectorServiceServicer_to_server,
        Failing(),
        service_name(connector_pb2, "ConnectorService"),
    )
    port = await server.start()
    ch = channel(f"127.0.0.1:{port}")
    try:
        caller = tracing.start("caller")
        with tracing.activate(caller), pytest.raises(grpc.aio.AioRpcError):
            await connector_pb2_grpc.ConnectorServiceStub(ch).Deliver(
                connector_pb2.DeliverRequest(), timeout=5
            )
    finally:
        await ch.close()
        await server.stop(0)
    spans = {s.name: s for s in recorded_spans.get_finished_spans()}
    assert not spans[DELIVER].status.is_ok
