"""Fan-out to connectors, shared by the router (messages and receipts) and the
connectors (typing and presence signals): who is in a conversation (cached member
lists), which connector holds which of their devices, and one ordered, bounded lane
of Deliver calls per remote connector.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc

from im.clock import Clock
from im.config import Settings
from im.grpcutil import ChannelPool
from im.ids import parse_direct
from im.ports import ConnectorInfo, DeviceRoute
from im.v1 import connector_pb2, connector_pb2_grpc, group_pb2, group_pb2_grpc

log = logging.getLogger("im.fanout")

DELIVER_TIMEOUT = 5.0
MAX_CACHED_GROUPS = 10_000

T = TypeVar("T")


@dataclass(slots=True)
class Audience:
    """Who may receive a conversation's messages: member id -> seq they joined after."""

    joined: dict[int, int]
    version: int = 0
    fetched_at: float = 0.0  # clock.monotonic() of the last check with the group service


class MemberCache:
    """Members per conversation. A 1:1 id names both members; a group's list is cached
    and revalidated by its member_version (one small RPC that answers "unchanged"
    without the list), so a removed member gets nothing after removal.

    ``max_age`` 0 revalidates on every call (the router: once per batch); a positive
    one trusts a list that young without asking (typing signals, where a stale list
    for a second or two costs nothing and membership events call ``forget``)."""

    def __init__(
        self,
        settings: Settings,
        channels: ChannelPool,
        clock: Clock | None = None,
        max_age: float = 0.0,
    ) -> None:
        self._settings = settings
        self._channels = channels
        self._clock = clock
        self._max_age = max_age
        self._groups: dict[str, Audience] = {}
        self.fetches = 0

    def forget(self, conversation_id: str) -> None:
        self._groups.pop(conversation_id, None)

    async def audience(self, conversation_id: str) -> Audience:
        pair = parse_direct(conversation_id)
        if pair is not None:
            return Audience(dict.fromkeys(pair, 0))
        cached = self._groups.get(conversation_id)
        now = self._clock.monotonic() if self._clock is not None else 0.0
        if cached is not None and self._max_age > 0 and now - cached.fetched_at < self._max_age:
            return cached
        stub = group_pb2_grpc.GroupServiceStub(self._channels.get(self._settings.group_addr()))
        reply = await stub.ListMemberIds(
            group_pb2.ListMemberIdsRequest(
                conversation_id=conversation_id,
                known_version=cached.version if cached else 0,
            ),
            timeout=10,
        )
        if reply.unchanged and cached is not None:
            cached.fetched_at = now
            return cached
        self.fetches += 1
        audience = Audience(
            dict(zip(reply.user_ids, reply.joined_seqs, strict=True)), reply.member_version, now
        )
        if len(self._groups) > MAX_CACHED_GROUPS:
            self._groups.clear()  # bounded memory; lists are fetched again when needed
        self._groups[conversation_id] = audience
        return audience


def devices_by_connector(
    user_ids: Iterable[int], routes: dict[int, list[DeviceRoute]]
) -> dict[str, list[connector_pb2.DeviceRef]]:
    """The online devices of these users, grouped by the connector holding them."""
    out: dict[str, list[connector_pb2.DeviceRef]] = defaultdict(list)
    for user_id in user_ids:
        for route in routes.get(user_id, ()):
            out[route.connector_id].append(
                connector_pb2.DeviceRef(user_id=user_id, device_id=route.device_id)
            )
    return out


# What a lane calls back: (connector id, the item offered, the connector's answer).
OnResult = Callable[[str, T, connector_pb2.DeliverResponse], Awaitable[None]]
OnFailure = Callable[[str, BaseException], None]
OnDrop = Callable[[str], None]


class Lane(Generic[T]):
    """Deliver calls to one remote connector: in order, one at a time, from a bounded
    queue, so a slow or dead connector delays only its own clients, never the calls
    queued for everyone else. ``T``: what the caller wants back with the answer."""

    def __init__(
        self,
        connector_id: str,
        addr: str,
        stub: connector_pb2_grpc.ConnectorServiceStub,
        depth: int,
        on_result: OnResult[T],
        on_failure: OnFailure,
        on_drop: OnDrop,
    ) -> None:
        self.connector_id = connector_id
        self.addr = addr
        self._stub = stub
        self._on_result = on_result
        self._on_failure = on_failure
        self._on_drop = on_drop
        self._queue: asyncio.Queue[tuple[T, connector_pb2.DeliverRequest]] = asyncio.Queue(depth)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def offer(self, item: T, request: connector_pb2.DeliverRequest) -> bool:
        """Queue a call; False (and on_drop) when the queue is full."""
        try:
            self._queue.put_nowait((item, request))
        except asyncio.QueueFull:
            self._on_drop(self.connector_id)
            return False
        return True

    async def _run(self) -> None:
        while True:
            item, request = await self._queue.get()
            try:
                result = await self._stub.Deliver(request, timeout=DELIVER_TIMEOUT)
                await self._on_result(self.connector_id, item, result)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._on_failure(self.connector_id, exc)
            finally:
                self._queue.task_done()

    async def idle(self) -> None:
        await self._queue.join()

    def close(self) -> None:
        self._task.cancel()


class Lanes(Generic[T]):
    """One lane per live remote connector, replaced when its address changes and
    closed when it leaves the registry (what it had queued is lost: best effort)."""

    def __init__(
        self,
        channels: ChannelPool,
        on_result: OnResult[T],
        on_failure: OnFailure,
        on_drop: OnDrop,
    ) -> None:
        self._channels = channels
        self._on_result = on_result
        self._on_failure = on_failure
        self._on_drop = on_drop
        self._lanes: dict[str, Lane[T]] = {}

    def __getitem__(self, connector_id: str) -> Lane[T]:
        return self._lanes[connector_id]

    def get(self, info: ConnectorInfo, depth: int) -> Lane[T]:
        lane = self._lanes.get(info.connector_id)
        if lane is None or lane.addr != info.grpc_addr:
            if lane is not None:
                lane.close()
            stub = connector_pb2_grpc.ConnectorServiceStub(self._channels.get(info.grpc_addr))
            lane = self._lanes[info.connector_id] = Lane(
                info.connector_id,
                info.grpc_addr,
                stub,
                depth,
                self._on_result,
                self._on_failure,
                self._on_drop,
            )
        return lane

    def close_except(self, live: Iterable[str]) -> None:
        keep = set(live)
        for connector_id in [c for c in self._lanes if c not in keep]:
            self._lanes.pop(connector_id).close()

    async def idle(self) -> None:
        """Until every lane has sent what it was given (tests, shutdown)."""
        for lane in list(self._lanes.values()):
            await lane.idle()

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.close()
        self._lanes.clear()


def rpc_code(exc: BaseException) -> object:
    """A short description of a failed call, for logs."""
    return exc.code() if isinstance(exc, grpc.RpcError) else repr(exc)
