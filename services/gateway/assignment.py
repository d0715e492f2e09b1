"""Which connector a device gets at login.

The registry lists the connectors that hold a ZooKeeper session, but a connector that
was killed stays listed until its session times out (seconds), and one that lost its
bus or registry says so only through its health. So the gateway also probes every
listed connector's gRPC health every PROBE_EVERY seconds and hands out only those that
answer SERVING: a dead or ailing connector stops being handed out within about a
second. Among those, a device keeps the connector it is on, else it gets the least
loaded one. Where a device is connected (presence) also tells which connector to ask
to kick it off when its session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from im.auth import Claims
from im.grpcutil import ChannelPool
from im.ports import Backends, ConnectorInfo, Registry
from im.v1 import connector_pb2, connector_pb2_grpc
from services.gateway.calls import Calls
from services.gateway.errors import ApiError

log = logging.getLogger("im.gateway")

PROBE_EVERY = 0.5
PROBE_TIMEOUT = 0.4
KICK_TIMEOUT = 2.0  # logout answers even when the connector is slow or gone


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


class ConnectorAssigner:
    """Assigns connectors at login and kicks devices off the one they are on."""

    def __init__(
        self,
        backends: Backends,
        pool: ChannelPool,
        prober: ConnectorProber,
        calls: Calls,
    ) -> None:
        self._backends = backends
        self._connector_pool = pool
        self._prober = prober
        self._calls = calls
        self._recent = RecentAssignments()

    async def assign(self, user_id: int, device_id: str) -> ConnectorInfo:
        listed = await self._calls.backend("registry", self._backends.registry.connectors())
        connectors = self._prober.usable(listed)
        if not connectors:
            raise ApiError(503, "no_connector", "no connector is available; retry later")
        current = await self._sticky_connector(user_id, device_id)
        now = time.monotonic()
        chosen = pick_connector(connectors, current, self._recent.counts(now))
        assert chosen is not None
        self._recent.add(chosen.connector_id, now)
        return chosen

    async def _sticky_connector(self, user_id: int, device_id: str) -> str | None:
        """The connector the device is on now, if presence can tell: only a preference,
        so a presence outage must not fail the login."""
        try:
            return await self._device_connector(user_id, device_id)
        except ApiError:
            return None

    async def _device_connector(self, user_id: int, device_id: str) -> str | None:
        routes = await self._calls.backend("presence", self._backends.presence.routes([user_id]))
        for route in routes.get(user_id, []):
            if route.device_id == device_id:
                return route.connector_id
        return None

    async def kick(self, claims: Claims, reason: int) -> None:
        connector_id = await self._device_connector(claims.user_id, claims.device_id)
        if connector_id is None:
            return
        connectors = await self._backends.registry.connectors()
        info = next((c for c in connectors if c.connector_id == connector_id), None)
        if info is None:
            return  # the connector is gone, and the connection with it
        stub = connector_pb2_grpc.ConnectorServiceStub(self._connector_pool.get(info.grpc_addr))
        request = connector_pb2.KickRequest(
            user_id=claims.user_id,
            device_id=claims.device_id,
            reason=reason,
            session_id=claims.session_id,
        )
        try:
            await stub.Kick(request, timeout=KICK_TIMEOUT)
        except grpc.aio.AioRpcError:
            # A dead address must not keep a channel around forever.
            await self._connector_pool.drop(info.grpc_addr)
            raise

    async def kick_user(self, user_id: int, reason: int) -> int:
        """Kicks every socket of the user on every connector presence names (an admin
        disabled or deleted the account); returns how many connectors were asked.
        Best effort per connector: the sessions are revoked already, so a connector
        that misses the kick refuses them at the next Auth."""
        routes = await self._calls.backend("presence", self._backends.presence.routes([user_id]))
        on = {route.connector_id for route in routes.get(user_id, [])}
        if not on:
            return 0
        connectors = await self._backends.registry.connectors()
        request = connector_pb2.KickRequest(user_id=user_id, reason=reason)  # every device
        asked = 0
        for info in connectors:
            if info.connector_id not in on:
                continue
            stub = connector_pb2_grpc.ConnectorServiceStub(self._connector_pool.get(info.grpc_addr))
            try:
                await stub.Kick(request, timeout=KICK_TIMEOUT)
                asked += 1
            except grpc.aio.AioRpcError as exc:
                await self._connector_pool.drop(info.grpc_addr)
                log.warning("kick of user %d at %s failed: %s", user_id, info.connector_id, exc)
        return asked

    async def device_connectors(self, user_id: int) -> dict[str, str]:
        """device id -> the connector holding its socket, for the user's online devices."""
        routes = await self._calls.backend("presence", self._backends.presence.routes([user_id]))
        return {route.device_id: route.connector_id for route in routes.get(user_id, [])}
