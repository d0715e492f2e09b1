"""A real gateway on a real port, in front of real user and group services and a
tiny recording connector, with in-process registry/presence/sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from im.adapters.memory import MemoryBus, MemoryKV, MemoryRegistry
from im.adapters.sqlstore import SqlMessageStore
from im.config import Settings
from im.grpcutil import GrpcServer, service_name
from im.ports import Backends, ConnectorInfo
from im.v1 import connector_pb2, connector_pb2_grpc, group_pb2_grpc
from services.gateway.app import GatewayService
from services.gateway.app import build as build_gateway
from services.group.app import build as build_group
from services.user.app import build as build_user


class RecordingConnector(connector_pb2_grpc.ConnectorServiceServicer):
    """Stands in for a connector: remembers every Kick."""

    def __init__(self) -> None:
        self.kicks: list[connector_pb2.KickRequest] = []

    async def Kick(
        self, request: connector_pb2.KickRequest, context: grpc.aio.ServicerContext
    ) -> connector_pb2.KickResponse:
        self.kicks.append(request)
        return connector_pb2.KickResponse(kicked=1)

    async def Deliver(
        self, request: connector_pb2.DeliverRequest, context: grpc.aio.ServicerContext
    ) -> connector_pb2.DeliverResponse:
        return connector_pb2.DeliverResponse()


@dataclass
class Suite:
    client: httpx.AsyncClient
    settings: Settings
    backends: Backends
    kv: MemoryKV
    registry: MemoryRegistry
    connector: RecordingConnector
    connector_info: ConnectorInfo
    store: SqlMessageStore
    gateway: GatewayService
    groups: group_pb2_grpc.GroupServiceStub
    _counter: list[int] = field(default_factory=lambda: [0])

    async def register(self, username: str, password: str = "secret-pass-1") -> int:
        r = await self.client.post(
            "/v1/auth/register", json={"username": username, "password": password}
        )
        assert r.status_code == 201, r.text
        return r.json()["user_id"]

    async def login(
        self, username: str, device_id: str = "phone", password: str = "secret-pass-1"
    ) -> dict:
        r = await self.client.post(
            "/v1/auth/login",
            json={"username": username, "password": password, "device_id": device_id},
        )
        assert r.status_code == 200, r.text
        return r.json()

    async def user(self, username: str, device_id: str = "phone") -> tuple[int, dict[str, str]]:
        """Register and log in; returns the id and the auth headers."""
        user_id = await self.register(username)
        token = (await self.login(username, device_id))["access_token"]
        return user_id, {"Authorization": f"Bearer {token}"}


def base_settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        host="127.0.0.1",
        gateway_port=0,
        gateway_grpc_port=0,
        user_grpc_port=0,
        group_grpc_port=0,
        argon2_time_cost=1,
        argon2_memory_kib=8192,
        heartbeat_interval=15.0,
        jwt_ttl_seconds=600,
    )


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings a test changes for the whole suite, e.g. a small ``max_group_size``:
    ``@pytest.mark.parametrize("settings_overrides", [{...}])``."""
    return {}


@pytest.fixture
async def suite(tmp_path: Path, settings_overrides: dict[str, Any]) -> AsyncIterator[Suite]:
    settings = base_settings(tmp_path).model_copy(update=settings_overrides)
    kv = MemoryKV()
    registry = MemoryRegistry()
    backends = Backends(
        bus=MemoryBus(settings.topic_partitions),
        registry=registry,
        presence=kv,
        sessions=kv,
        idempotency=kv,
        rate_limits=kv,
    )
    started: list = []
    connector_server = GrpcServer("127.0.0.1", 0)
    try:
        user = build_user(settings, backends)
        await user.start()
        started.append(user)
        group = build_group(settings, backends)
        await group.start()
        started.append(group)
        settings = settings.model_copy(
            update={
                "user_service_addr": user.endpoints()["grpc"],
                "group_service_addr": group.endpoints()["grpc"],
            }
        )

        connector = RecordingConnector()
        connector_server.add(
            connector_pb2_grpc.add_ConnectorServiceServicer_to_server,
            connector,
            service_name(connector_pb2, "ConnectorService"),
        )
        grpc_port = await connector_server.start()
        info = ConnectorInfo("conn-a", "127.0.0.1", 7070, 7071, grpc_port, connections=3)
        await registry.register(info)
        await registry.announce_router("router-test", True)  # as a running router would

        gateway = build_gateway(settings, backends)
        await gateway.start()
        started.append(gateway)

        store = SqlMessageStore(settings.resolved_message_store_url())
        channel = grpc.aio.insecure_channel(settings.group_addr())
        async with httpx.AsyncClient(base_url=gateway.endpoints()["http"], timeout=10) as client:
            yield Suite(
                client=client,
                settings=settings,
                backends=backends,
                kv=kv,
                registry=registry,
                connector=connector,
                connector_info=info,
                store=store,
                gateway=gateway,
                groups=group_pb2_grpc.GroupServiceStub(channel),
            )
        await channel.close()
        await store.close()
    finally:
        for service in reversed(started):
            await service.stop()
        await connector_server.stop(0)
