"""gRPC plumbing shared by every service: servers with health (and reflection when
asked), mutual TLS between the suite's services, client channels, and status helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from im.config import Settings
from im.grpcctx import ContextClientInterceptor, ContextServerInterceptor
from im.listeners import ListenError, bind_failure, probe, what_of

_SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
]
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.enable_retries", 1),
]
_HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Liveness probes ask the health service for this name: SERVING from start until the
# process exits, whatever readiness says. The answer comes from the event loop, so a
# wedged loop fails the probe (a TCP probe would still pass: the kernel accepts).
LIVENESS = "liveness"


class InsecureInternalError(RuntimeError):
    """A service would serve internal gRPC to anyone who can reach its port."""


@dataclass(frozen=True)
class GrpcSecurity:
    """Mutual TLS between the suite's services: a peer is one of us when its
    certificate was signed by the suite's CA, on both sides of every call.

    Clients verify ``server_name`` (which every internal certificate carries) rather
    than the dialled address, so pod IPs and DNS names need no certificate of their own.
    """

    root_certificates: bytes
    certificate_chain: bytes
    private_key: bytes
    server_name: str

    @classmethod
    def load(cls, ca_file: str, cert_file: str, key_file: str, server_name: str) -> GrpcSecurity:
        return cls(
            Path(ca_file).read_bytes(),
            Path(cert_file).read_bytes(),
            Path(key_file).read_bytes(),
            server_name,
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.root_certificates,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def grpc_security(settings: Settings) -> GrpcSecurity | None:
    """The internal mutual TLS of these settings; None when no file is configured."""
    files = (settings.internal_ca_file, settings.internal_cert_file, settings.internal_key_file)
    if not any(files):
        return None
    if not all(files):
        raise ValueError(
            "internal TLS needs all of IM_INTERNAL_CA_FILE, IM_INTERNAL_CERT_FILE and "
            "IM_INTERNAL_KEY_FILE"
        )
    return GrpcSecurity.load(*files, settings.internal_server_name)


def require_internal_security(settings: Settings) -> None:
    """Refuse to run one service of a distributed suite with open internal gRPC."""
    if grpc_security(settings) is None and not settings.internal_insecure:
        raise InsecureInternalError(
            "internal gRPC has no credentials: set IM_INTERNAL_CA_FILE, "
            "IM_INTERNAL_CERT_FILE and IM_INTERNAL_KEY_FILE (`imctl certs init` makes a dev "
            "set), or IM_INTERNAL_INSECURE=true to accept any caller (development only)"
        )


class GrpcServer:
    """A grpc.aio server with the standard health service; mutual TLS when given
    ``security``; reflection only when asked.

    Probes that cannot do TLS (Kubernetes gRPC probes) get ``health_port``: a plaintext
    listener that serves the health service and nothing else (0: any free port, None:
    no such listener). ``interceptors`` see every call of both listeners (metrics).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: GrpcSecurity | None = None,
        reflection: bool = False,
        health_port: int | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        port_setting: str = "",
    ) -> None:
        # Request ids and trace context from the callers' metadata (grpcctx) first, so
        # the others (metrics) run inside that context.
        self._interceptors = [ContextServerInterceptor(), *interceptors]
        self._server = grpc.aio.server(options=_SERVER_OPTIONS, interceptors=self._interceptors)
        self._port_setting = port_setting  # names the setting in a ListenError
        self._health = HealthServicer()
        self._host = host
        self._requested_port = port
        self._security = security
        self._reflection = reflection
        self._requested_health_port = health_port
        self._health_server: grpc.aio.Server | None = None
        self._names: list[str] = []  # the application services, for health and reflection
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.port = 0
        self.health_port = 0

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        port_setting: str,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> GrpcServer:
        """An internal server as the settings configure it (bind address, TLS, probes)
        on the port of the setting named ``port_setting`` (e.g. ``user_grpc_port``)."""
        return cls(
            settings.internal_host,
            int(getattr(settings, port_setting)),
            security=grpc_security(settings),
            reflection=settings.grpc_reflection,
            health_port=settings.grpc_health_port or None,
            interceptors=interceptors,
            port_setting=port_setting,
        )

    @property
    def secure(self) -> bool:
        return self._security is not None

    def add(
        self, register: Callable[[Any, grpc.aio.Server], None], servicer: Any, service_name: str
    ) -> None:
        register(servicer, self._server)
        self._names.append(service_name)

    def _bind(self, server: grpc.aio.Server, port: int, secure: bool) -> int:
        address = f"{self._host}:{port}"
        setting = (self._port_setting if secure else "grpc_health_port") or "internal_host"
        if port:
            try:  # first with a plain socket: gRPC would only log why it failed
                probe(self._host, port)
            except OSError as exc:
                raise ListenError(what_of(setting), self._host, port, setting, exc) from exc
        try:
            if secure and self._security is not None:
                bound = server.add_secure_port(address, self._security.server_credentials())
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError:  # grpcio: "Failed to bind to address ..."
            bound = 0
        if bound == 0:
            raise bind_failure(setting, self._host, port)
        return bound

    async def start(self) -> int:
        if self._reflection:
            names = [*self._names, _HEALTH_NAME, reflection.SERVICE_NAME]
            reflection.enable_server_reflection(names, self._server)
        self.port = self._bind(self._server, self._requested_port, secure=True)
        if self._requested_health_port is not None:
            self._health_server = grpc.aio.server(
                options=_SERVER_OPTIONS, interceptors=self._interceptors
            )
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._health_server)
            self.health_port = self._bind(
                self._health_server, self._requested_health_port, secure=False
            )
            await self._health_server.start()
        await self._server.start()
        await self.set_serving(True)
        await self._health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self._names]:
            await self._health.set(name, status)

    async def stop(self, grace: float = 2.0) -> None:
        await self.set_serving(False)
        await self._server.stop(grace)
        if self._health_server is not None:
            await self._health_server.stop(0)


def service_name(pb2_module: Any, name: str) -> str:
    return pb2_module.DESCRIPTOR.services_by_name[name].full_name


def channel(addr: str, security: GrpcSecurity | None = None) -> grpc.aio.Channel:
    # Every call carries the caller's request id and trace context (grpcctx).
    interceptors = [ContextClientInterceptor()]
    if security is None:
        return grpc.aio.insecure_channel(addr, options=_CHANNEL_OPTIONS, interceptors=interceptors)
    options = [*_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", security.server_name)]
    return grpc.aio.secure_channel(
        addr, security.channel_credentials(), options=options, interceptors=interceptors
    )


class ChannelPool:
    """One channel per address, reused (channels multiplex calls)."""

    def __init__(self, security: GrpcSecurity | None = None) -> None:
        self._security = security
        self._channels: dict[str, grpc.aio.Channel] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> ChannelPool:
        return cls(grpc_security(settings))

    def get(self, addr: str) -> grpc.aio.Channel:
        ch = self._channels.get(addr)
        if ch is None:
            ch = self._channels[addr] = channel(addr, self._security)
        return ch

    async def drop(self, addr: str) -> None:
        ch = self._channels.pop(addr, None)
        if ch is not None:
            await ch.close()

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    await context.abort(code, message)


def unique(values: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(values))
