"""The gateway's internal gRPC API: ``MessageService.Send`` (protos/im/v1/message.proto),
server-side sends for internal services and bots, on ``gateway_grpc_port`` at
``internal_host`` with the suite's mutual TLS, health and (when asked) reflection, like
every internal gRPC server. The logic is ``gateway.messages`` (messages.py), shared with
``POST /v1/conversations/{id}/messages``; only the errors are mapped here."""

from __future__ import annotations

import re

import grpc

from im.config import Settings
from im.grpcutil import GrpcServer, grpc_security, service_name
from im.v1 import message_pb2, message_pb2_grpc
from services.gateway.errors import ApiError
from services.gateway.messages import (
    DEFAULT_CONTENT_TYPE,
    SERVER_DEVICE,
    UNKNOWN_SENDER,
    Draft,
    MessageOps,
)
from services.gateway.models import DEVICE_ID_PATTERN

_DEVICE = re.compile(DEVICE_ID_PATTERN)

# What a refusal of messages.py is on gRPC, by HTTP status.
_STATUS = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def grpc_status(exc: ApiError) -> grpc.StatusCode:
    if exc.code == UNKNOWN_SENDER:
        return grpc.StatusCode.FAILED_PRECONDITION
    return _STATUS.get(exc.status, grpc.StatusCode.INTERNAL)


class MessageServicer(message_pb2_grpc.MessageServiceServicer):
    def __init__(self, messages: MessageOps) -> None:
        self._messages = messages

    async def Send(
        self, request: message_pb2.ServerSendRequest, context: grpc.aio.ServicerContext
    ) -> message_pb2.ServerSendResponse:
        device = request.sender_device or SERVER_DEVICE
        if not _DEVICE.fullmatch(device):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "sender_device must be 1-64 characters of A-Z a-z 0-9 _ . : -",
            )
        draft = Draft(
            sender_id=request.sender_id,
            sender_device=device,
            conversation_id=request.conversation_id,
            client_msg_id=request.client_msg_id,
            body=request.body,
            content_type=request.content_type or DEFAULT_CONTENT_TYPE,
            attachment_ids=tuple(request.attachment_ids),
        )
        try:
            sent = await self._messages.send_as_service(draft)
        except ApiError as exc:
            await context.abort(grpc_status(exc), exc.detail)
        return message_pb2.ServerSendResponse(
            msg_id=sent.msg_id, server_ts=sent.server_ts, conversation_id=sent.conversation_id
        )


def message_server(
    settings: Settings,
    messages: MessageOps,
    interceptors: list[grpc.aio.ServerInterceptor] | None = None,
) -> GrpcServer:
    """The gateway's internal gRPC server. No plaintext health port of its own: the
    gateway's probes are HTTP (/healthz, /readyz), and IM_GRPC_HEALTH_PORT is the gRPC
    services' (the health service is on this port too, for internal callers)."""
    server = GrpcServer(
        settings.internal_host,
        settings.gateway_grpc_port,
        security=grpc_security(settings),
        reflection=settings.grpc_reflection,
        health_port=None,
        interceptors=interceptors or [],
        port_setting="gateway_grpc_port",
    )
    server.add(
        message_pb2_grpc.add_MessageServiceServicer_to_server,
        MessageServicer(messages),
        service_name(message_pb2, "MessageService"),
    )
    return server
