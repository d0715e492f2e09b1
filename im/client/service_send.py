"""For internal services and bots: send messages in a user's name through the gateway's
internal gRPC ``MessageService.Send`` (protos/im/v1/message.proto), with the suite's
mutual TLS certificate. See docs/architecture.md, "Server-side send".

    from im.client.service_send import ServiceSender

    async with ServiceSender.from_files(
        "gateway:50070", ca_file="ca.crt", cert_file="tls.crt", key_file="tls.key"
    ) as bot:
        sent = await bot.send(sender_id=42, conversation_id="g:7", text="build passed")
        print(sent.msg_id, sent.server_ts)

Refusals are ``grpc.aio.AioRpcError``: INVALID_ARGUMENT, FAILED_PRECONDITION (no such
sender), PERMISSION_DENIED (not a member), NOT_FOUND, UNAVAILABLE (send again with the
same client_msg_id: the message is stored once).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from im.config import Settings
from im.grpcutil import GrpcSecurity, channel, grpc_security
from im.tls import cert_files
from im.v1 import message_pb2, message_pb2_grpc

DEFAULT_SERVER_NAME = "im-internal"


class ServiceSender:
    """One channel to one gateway's MessageService; ``send`` as any user."""

    def __init__(self, addr: str, security: GrpcSecurity | None, timeout: float = 10.0) -> None:
        self.addr = addr
        self._channel = channel(addr, security)
        self._stub = message_pb2_grpc.MessageServiceStub(self._channel)
        self._timeout = timeout

    @classmethod
    def from_files(
        cls,
        addr: str,
        *,
        ca_file: str | Path,
        cert_file: str | Path,
        key_file: str | Path,
        server_name: str = DEFAULT_SERVER_NAME,
        timeout: float = 10.0,
    ) -> ServiceSender:
        """With the suite's CA and a certificate it signed (``imctl certs init``)."""
        security = GrpcSecurity.load(str(ca_file), str(cert_file), str(key_file), server_name)
        return cls(addr, security, timeout)

    @classmethod
    def from_settings(cls, settings: Settings, addr: str = "") -> ServiceSender:
        """As a process of the suite would: its IM_INTERNAL_* files, else the dev set a
        standalone suite made in its data dir; ``addr`` defaults to this host's
        gateway_grpc_port."""
        security = grpc_security(settings)
        if security is None and not settings.internal_insecure:
            dev = cert_files(settings.data_dir / "tls" / "internal")
            if not dev.exist():
                raise FileNotFoundError(
                    "no internal certificate: set IM_INTERNAL_CA_FILE, IM_INTERNAL_CERT_FILE "
                    f"and IM_INTERNAL_KEY_FILE (none in {dev.ca.parent} either)"
                )
            security = GrpcSecurity.load(
                str(dev.ca), str(dev.cert), str(dev.key), settings.internal_server_name
            )
        addr = addr or f"{settings.internal_public_host()}:{settings.gateway_grpc_port}"
        return cls(addr, security)

    async def __aenter__(self) -> ServiceSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def send(
        self,
        sender_id: int,
        conversation_id: str,
        text: str | None = None,
        *,
        body: bytes | None = None,
        content_type: str = "text/plain",
        client_msg_id: str | None = None,
        sender_device: str = "",
        attachment_ids: list[str] | None = None,
    ) -> message_pb2.ServerSendResponse:
        """Send ``text`` (or ``body`` bytes) as ``sender_id``; a new UUID as
        client_msg_id unless given (give one to retry safely)."""
        if (text is None) == (body is None):
            raise ValueError("give exactly one of text and body")
        request = message_pb2.ServerSendRequest(
            sender_id=sender_id,
            conversation_id=conversation_id,
            client_msg_id=client_msg_id or str(uuid.uuid4()),
            content_type=content_type,
            body=text.encode() if text is not None else body,
            sender_device=sender_device,
            attachment_ids=attachment_ids or [],
        )
        return await self._stub.Send(request, timeout=self._timeout)


__all__ = ["ServiceSender"]
