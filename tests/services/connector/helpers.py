"""Helpers of the connector's unit tests: connections whose socket is a list of
frames, a fixed membership list, and frame shortcuts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NamedTuple

from im.adapters.memory import MemoryBus, MemoryKV, MemoryRegistry
from im.auth import TokenIssuer
from im.clock import Clock
from im.config import Settings
from im.grpcutil import ChannelPool
from im.ids import parse_direct
from im.ports import Backends
from im.v1 import connector_pb2, group_pb2_grpc, wire_pb2
from services.connector.authorizer import Signal
from services.connector.service import Conn, ConnectorCore
from services.group.app import build as build_group
from tests.services.group.helpers import make_settings


class RecordingConn(Conn):
    """A connection whose socket is a list of frames."""

    __slots__ = ("frames", "was_closed")

    def __init__(self, conn_id: int, now: float) -> None:
        super().__init__(conn_id, now)
        self.frames: list[wire_pb2.Frame] = []
        self.was_closed = False

    def _write(self, payload: bytes) -> None:
        self.frames.append(wire_pb2.Frame.FromString(payload))

    def _close(self) -> None:
        self.was_closed = True

    def kinds(self) -> list[str]:
        return [f.WhichOneof("kind") for f in self.frames]

    def last(self, kind: str) -> wire_pb2.Frame:
        return [f for f in self.frames if f.WhichOneof("kind") == kind][-1]


class AllowList:
    """The authorizer's interface over a fixed set of memberships (nothing cached, so
    acks and reads take the lookup path)."""

    def __init__(self, allowed: set[tuple[int, str]]) -> None:
        self.allowed = allowed
        self.read_only: set[str] = set()
        self.lookups: list[list[str]] = []

    async def may_send(self, user_id: int, conversation_id: str) -> bool:
        return (user_id, conversation_id) in self.allowed and conversation_id not in self.read_only

    async def may_signal(self, user_id: int, conversation_id: str) -> Signal:
        if (user_id, conversation_id) not in self.allowed:
            pair = parse_direct(conversation_id)
            return Signal.NOBODY if pair is not None and user_id in pair else Signal.REFUSED
        return Signal.REFUSED if conversation_id in self.read_only else Signal.ALLOWED

    def cached(self, user_id: int, conversation_id: str) -> bool | None:
        return None

    def cached_send(self, user_id: int, conversation_id: str) -> bool | None:
        return None

    def is_read_only(self, conversation_id: str) -> bool:
        return conversation_id in self.read_only

    def mark_read_only(self, conversation_id: str) -> None:
        self.read_only.add(conversation_id)

    async def members_of(self, user_id: int, conversation_ids: list[str]) -> set[str]:
        self.lookups.append(list(conversation_ids))
        return {c for c in conversation_ids if (user_id, c) in self.allowed}


class FakeDirectory:
    """What presence asks the user and group services, from dicts."""

    def __init__(self) -> None:
        self.hidden: set[int] = set()
        self.peers_of: dict[int, list[int]] = {1: [2], 2: [1]}
        self.last_seen: dict[int, int] = {}
        self.down = False  # the user service fails every last-seen write

    async def visible(self, user_id: int) -> bool:
        return user_id not in self.hidden

    async def peers(self, user_id: int) -> list[int]:
        return self.peers_of.get(user_id, [])

    async def record_last_seen(self, user_id: int, last_seen_ms: int) -> None:
        if self.down:
            raise ConnectionError("user service unavailable")
        self.last_seen[user_id] = max(last_seen_ms, self.last_seen.get(user_id, 0))


def open_conn(core: ConnectorCore) -> RecordingConn:
    conn = RecordingConn(core.new_conn_id(), core.clock.monotonic())
    core.opened(conn)
    return conn


async def authed(core: ConnectorCore, issuer: TokenIssuer, user: int, device: str = "d1"):
    conn = open_conn(core)
    token, _ = issuer.issue(user, device)
    core.on_frame(conn, wire_pb2.Frame(auth=wire_pb2.Auth(token=token)))
    await core.wait_background()
    assert conn.kinds()[-1] == "auth_ok", conn.frames
    return conn


def send(conn_core, conn, cid: str, conv: str = "d:1:2", body: bytes = b"hi") -> None:
    conn_core.on_frame(
        conn,
        wire_pb2.Frame(
            send=wire_pb2.Send(
                client_msg_id=cid, conversation_id=conv, content_type="text/plain", body=body
            )
        ),
    )


def deliver_request(seq: int, user: int = 2, device: str = "d1") -> connector_pb2.DeliverRequest:
    msg = wire_pb2.Message(
        msg_id=1000 + seq, conversation_id="d:1:2", seq=seq, sender_id=1, body=b"m"
    )
    return connector_pb2.DeliverRequest(
        deliveries=[
            connector_pb2.Delivery(
                message=msg, targets=[connector_pb2.DeviceRef(user_id=user, device_id=device)]
            )
        ]
    )


def memory_backends(clock: Clock) -> Backends:
    """In-process backends: a two-partition bus, one key-value store for the rest."""
    kv = MemoryKV(clock)
    return Backends(
        bus=MemoryBus(partitions=2),
        registry=MemoryRegistry(),
        presence=kv,
        sessions=kv,
        idempotency=kv,
        rate_limits=kv,
    )


class GroupService(NamedTuple):
    settings: Settings  # pointing at the running group service
    channels: ChannelPool
    stub: group_pb2_grpc.GroupServiceStub


@asynccontextmanager
async def group_service(tmp_path: Path) -> AsyncIterator[GroupService]:
    """A real group service on SQLite (blocks, dissolution), for the authorizer."""
    settings = make_settings(tmp_path)
    group = build_group(settings)
    await group.start()
    settings = settings.model_copy(update={"group_service_addr": group.endpoints()["grpc"]})
    channels = ChannelPool.for_settings(settings)
    try:
        stub = group_pb2_grpc.GroupServiceStub(channels.get(settings.group_addr()))
        yield GroupService(settings, channels, stub)
    finally:
        await channels.close()
        await group.stop()
