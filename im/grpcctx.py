"""Request context across gRPC: the caller's request id (``x-request-id``) and trace
context (``traceparent``) ride in the call's metadata.

``ContextClientInterceptor`` (on every channel ``grpcutil`` builds) adds them from the
caller's log context and current span; ``ContextServerInterceptor`` (on every server)
puts them into the handler's log context and, when traces are recorded and the caller
is part of one, runs the handler in a server span that is its child. Calls that carry
neither (probes, internal calls outside any request) pass through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from im import logs, tracing

REQUEST_ID = "x-request-id"
TRACEPARENT = "traceparent"


def outgoing_metadata() -> list[tuple[str, str]]:
    """What a call made here should carry."""
    extra = []
    request_id = logs.current().get("request_id")
    if request_id:
        extra.append((REQUEST_ID, str(request_id)))
    if tracing.enabled:
        parent = tracing.traceparent()
        if parent:
            extra.append((TRACEPARENT, parent))
    return extra


class ContextClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        extra = outgoing_metadata()
        if extra:
            metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()), *extra)
            client_call_details = grpc.aio.ClientCallDetails(
                client_call_details.method,
                client_call_details.timeout,
                metadata,
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
        return await continuation(client_call_details, request)


def _incoming(metadata: Any) -> tuple[str, str]:
    request_id = parent = ""
    for key, value in metadata or ():
        if key == REQUEST_ID and isinstance(value, str):
            request_id = value[:128]
        elif key == TRACEPARENT and isinstance(value, str):
            parent = value
    return request_id, parent


class ContextServerInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        request_id, parent = _incoming(handler_call_details.invocation_metadata)
        traced = tracing.enabled and bool(parent)
        if handler is None or handler.unary_unary is None or not (request_id or traced):
            return handler
        behaviour = handler.unary_unary
        method = handler_call_details.method.lstrip("/")  # "im.v1.UserService/Authenticate"

        async def with_context(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = logs.bind(request_id=request_id)
            try:
                if not traced:
                    return await behaviour(request, context)
                attributes = {"rpc.system": "grpc", "rpc.method": method}
                span = tracing.start(method, parent, tracing.SpanKind.SERVER, attributes)
                with tracing.activate(span):
                    return await behaviour(request, context)
            finally:
                logs.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            with_context,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
