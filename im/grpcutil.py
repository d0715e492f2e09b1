"""gRPC plumbing shared by every service: servers with health and reflection,
client channels, and status helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

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


class GrpcServer:
    """A grpc.aio server with the standard health and reflection services."""

    def __init__(self, host: str, port: int) -> None:
        self._server = grpc.aio.server(options=_SERVER_OPTIONS)
        self._health = HealthServicer()
        self._host = host
        self._requested_port = port
        self._names: list[str] = [
            reflection.SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.port = 0

    def add(
        self, register: Callable[[Any, grpc.aio.Server], None], servicer: Any, service_name: str
    ) -> None:
        register(servicer, self._server)
        self._names.append(service_name)

    async def start(self) -> int:
        reflection.enable_server_reflection(self._names, self._server)
        self.port = self._server.add_insecure_port(f"{self._host}:{self._requested_port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {self._host}:{self._requested_port}")
        await self._server.start()
        await self.set_serving(True)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self._names[2:]]:
            await self._health.set(name, status)

    async def stop(self, grace: float = 2.0) -> None:
        await self.set_serving(False)
        await self._server.stop(grace)


def service_name(pb2_module: Any, name: str) -> str:
    return pb2_module.DESCRIPTOR.services_by_name[name].full_name


def channel(addr: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(addr, options=_CHANNEL_OPTIONS)


class ChannelPool:
    """One channel per address, reused (channels multiplex calls)."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, addr: str) -> grpc.aio.Channel:
        ch = self._channels.get(addr)
        if ch is None:
            ch = self._channels[addr] = channel(addr)
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
