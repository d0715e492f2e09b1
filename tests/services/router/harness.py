"""A router against a real group service and a recording connector (real gRPC), with
in-process bus, presence and registry: the router's tests share it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from im.adapters.memory import MemoryBus, MemoryKV, MemoryRegistry
from im.adapters.sqlstore import SqlMessageStore
from im.config import Settings
from im.grpcutil import GrpcServer, channel, service_name
from im.ports import Backends, ConnectorInfo
from im.v1 import bus_pb2, connector_pb2, connector_pb2_grpc, group_pb2, group_pb2_grpc, wire_pb2
from services.group.app import build as build_group
from services.router.service import Router


class RecordingConnector(connector_pb2_grpc.ConnectorServiceServicer):
    def __init__(self) -> None:
        self.requests: list[connector_pb2.DeliverRequest] = []

    async def Deliver(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        pushed = sum(len(d.targets) for d in request.deliveries)
        return connector_pb2.DeliverResponse(pushed=pushed)

    def delivered(self) -> list[tuple[int, int]]:
        """(user, seq) pairs pushed so far."""
        return [
            (t.user_id, d.message.seq)
            for r in self.requests
            for d in r.deliveries
            for t in d.targets
        ]

    def receipts(self) -> list[tuple[int, int, int]]:
        """(target user, reader, read_seq)."""
        return [
            (t.user_id, r.receipt.reader_id, r.receipt.read_seq)
            for req in self.requests
            for r in req.receipts
            for t in r.targets
        ]


@dataclass
class Harness:
    router: Router
    bus: MemoryBus
    kv: MemoryKV
    groups: group_pb2_grpc.GroupServiceStub
    connector: RecordingConnector
    settings: Settings

    async def run_bus(self) -> None:
        """Let the router handle everything on the bus, as its loop would."""
        consumer = self.bus.consumer(
            [
                self.settings.topic_messages,
                self.settings.topic_cursors,
                self.settings.topic_membership,
            ],
            "routers",
        )
        try:
            while records := await consumer.poll(1000, 0.01):
                await self.router.handle(records, consumer)
            await self.router.flush()
        finally:
            await consumer.close()

    def consumer(self):  # type: ignore[no-untyped-def]
        """A member of the routers' group on every topic, as the router app uses."""
        s = self.settings
        return self.bus.consumer([s.topic_messages, s.topic_cursors, s.topic_membership], "routers")

    async def send(self, conv: str, sender: int, msg_id: int) -> None:
        message = wire_pb2.Message(
            msg_id=msg_id, conversation_id=conv, sender_id=sender, body=b"x", server_ts=1
        )
        await self.bus.publish(
            self.settings.topic_messages,
            conv,
            bus_pb2.InboundMessage(message=message).SerializeToString(),
        )

    async def report(self, conv: str, user: int, delivered: int = 0, read: int = 0) -> None:
        await self.bus.publish(
            self.settings.topic_cursors,
            conv,
            bus_pb2.CursorReport(
                conversation_id=conv, user_id=user, delivered_seq=delivered, read_seq=read
            ).SerializeToString(),
        )


@contextlib.asynccontextmanager
async def running_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    settings = Settings(
        data_dir=tmp_path, host="127.0.0.1", group_grpc_port=0, receipt_push_max_members=3
    )
    group_app = build_group(settings)
    await group_app.start()
    settings = settings.model_copy(update={"group_service_addr": group_app.endpoints()["grpc"]})
    recorder = RecordingConnector()
    server = GrpcServer("127.0.0.1", 0)
    server.add(
        connector_pb2_grpc.add_ConnectorServiceServicer_to_server,
        recorder,
        service_name(connector_pb2, "ConnectorService"),
    )
    port = await server.start()
    kv, registry, bus = MemoryKV(), MemoryRegistry(), MemoryBus(2)
    await registry.register(ConnectorInfo("c1", "127.0.0.1", 1, 2, port))
    backends = Backends(
        bus=bus, registry=registry, presence=kv, sessions=kv, idempotency=kv, rate_limits=kv
    )
    store = SqlMessageStore(settings.resolved_database_url())
    router = Router(settings, backends, store)
    ch = channel(settings.group_addr())
    try:
        yield Harness(router, bus, kv, group_pb2_grpc.GroupServiceStub(ch), recorder, settings)
    finally:
        await ch.close()
        await router.channels.close()
        await server.stop(0)
        await group_app.stop()
        await store.close()


async def online(h: Harness, *users: int) -> None:
    for u in users:
        await h.kv.connect(u, f"dev{u}", "c1", 60)


async def make_group(h: Harness, owner: int, members: list[int]) -> str:
    reply = await h.groups.CreateGroup(
        group_pb2.CreateGroupRequest(owner_id=owner, name="g", member_ids=members)
    )
    return reply.conversation.conversation_id
