"""Which connector a device gets at login.

The registry lists the connectors that hold a ZooKeeper session, but a connector that
was killed stays listed until its session times out (seconds), and one that lost its
bus or registry says so only through its health. So the gateway also probes every
listed connector's gRPC health every PROBE_EVERY seconds and hands out only those that
answer SERVING: a dead or ailing connector stops being handed out within about a
second. Among those, a device keeps the connector it is on, else it gets the least
loaded one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from im.grpcutil import ChannelPool
from im.ports import ConnectorInfo, Registry

log = logging.getLogger("im.gateway")

PROBE_EVERY = 0.5
PROBE_TIMEOUT = 0.4


def pick_connector(
    connectors: list[ConnectorInfo],
    current_connector_id: str | None,
    recent: dict[str, int] | None = None,
) -> ConnectorInfo | None:
    """The connector a device should use: the one it is still connected to (so a
    reconnect does not bounce between pods), else the least loaded one. ``recent``
    counts this gateway's own assignments that the registry's load figures (refreshed
    every few seconds) cannot show yet, so a burst of logins is spread out."""
    if not connectors:
        return None
    if current_connector_id is not None:
        for info in connectors:
            if info.connector_id == current_connector_id:
                return info
    recent = recent or {}
    return min(
        connectors, key=lambda c: (c.connections + recent.get(c.connector_id, 0), c.connector_id)
    )


class RecentAssignments:
    """Assignments made by this gateway in the last ``window`` seconds, per connector."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._stamps: dict[str, deque[float]] = {}

    def counts(self, now: float) -> dict[str, int]:
        horizon = now - self.window
        for stamps in self._stamps.values():
            while stamps and stamps[0] < horizon:
                stamps.popleft()
        return {cid: len(stamps) for cid, stamps in self._stamps.items() if stamps}

    def add(self, connector_id: str, now: float) -> None:
        self._stamps.setdefault(connector_id, deque()).append(now)


class ConnectorProber:
    """Keeps the set of listed connectors whose health check fails."""

    def __init__(self, registry: Registry, pool: ChannelPool) -> None:
        self._registry = registry
        self._pool = pool
        self.down: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def usable(self, connectors: list[ConnectorInfo]) -> list[ConnectorInfo]:
        """The connectors that answered their last probe. If none did, all of them:
        a gateway that cannot reach any (its own network trouble) should not turn
        every login away on that ground alone."""
        alive = [c for c in connectors if c.connector_id not in self.down]
        return alive or connectors

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.probe_all()
            except Exception as exc:  # the registry itself failing: keep the last view
                log.warning("probing connectors failed: %r", exc)
            await asyncio.sleep(PROBE_EVERY)

    async def probe_all(self) -> None:
        connectors = await self._registry.connectors()
        results = await asyncio.gather(*(self._probe(c) for c in connectors))
        down = {c.connector_id for c, ok in zip(connectors, results, strict=True) if not ok}
        for connector_id in down - self.down:
            log.warning(
                "connector %s does not answer its health check: not handed out", connector_id
            )
        for connector_id in (self.down - down) & {c.connector_id for c in connectors}:
            log.info("connector %s is healthy again", connector_id)
        self.down = down

    async def _probe(self, info: ConnectorInfo) -> bool:
        stub = health_pb2_grpc.HealthStub(self._pool.get(info.grpc_addr))
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT)
        except grpc.aio.AioRpcError:
            # A fresh channel next time: one to a dead address backs off its reconnects
            # for far longer than we want to wait for a restarted connector.
            await self._pool.drop(info.grpc_addr)
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING
