"""The gateway's readiness: the real request path, each part checked with a short
deadline (probes must answer well within the kubelet's timeout)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from im.config import Settings
from im.grpcutil import ChannelPool
from im.ports import Backends, MessageStore, Registry

log = logging.getLogger("im.gateway")

HEALTH_TIMEOUT = 1.0


async def check_readiness(
    settings: Settings, pool: ChannelPool, store: MessageStore, backends: Backends
) -> tuple[bool, dict[str, str]]:
    """Both services, the store, a live view of the registry (without one the
    connectors handed out at login may be gone), a connector, a router that serves
    (without one, messages are acked but never delivered), the bus and presence
    (without them no message goes anywhere). Returns (ready, check -> "ok" or why
    not)."""
    registry, bus, presence = backends.registry, backends.bus, backends.presence
    checks = {
        "user": _grpc_health(pool, settings.user_addr()),
        "group": _grpc_health(pool, settings.group_addr()),
        "message_store": _store_health(store),
        "registry": _registry_health(registry),
        "connectors": _connectors_health(registry),
        "routers": _routers_health(registry),
        "bus": _port_health(bus.healthy()),
        "presence": _port_health(presence.healthy()),
    }
    results = await asyncio.gather(*checks.values(), return_exceptions=True)
    out: dict[str, str] = {}
    for name, result in zip(checks, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("readiness check %s failed: %r", name, result)
            out[name] = "error"
        else:
            out[name] = result
    return all(v == "ok" for v in out.values()), out


async def _grpc_health(pool: ChannelPool, addr: str) -> str:
    stub = health_pb2_grpc.HealthStub(pool.get(addr))
    try:
        response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        return f"unreachable ({exc.code().name})"
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        return "not serving"
    return "ok"


async def _port_health(check: Awaitable[bool]) -> str:
    healthy = await asyncio.wait_for(check, HEALTH_TIMEOUT * 2)
    return "ok" if healthy else "unhealthy"


async def _store_health(store: MessageStore) -> str:
    healthy = await asyncio.wait_for(store.healthy(), HEALTH_TIMEOUT * 2)
    return "ok" if healthy else "unhealthy"


async def _registry_health(registry: Registry) -> str:
    # The watched copy of the connectors and routers is only as fresh as the session
    # that keeps its watches: without one it shows whatever was there when it was lost.
    return "ok" if registry.healthy() else "no live registry session (its view may be stale)"


async def _connectors_health(registry: Registry) -> str:
    connectors = await asyncio.wait_for(registry.connectors(), HEALTH_TIMEOUT * 2)
    return "ok" if connectors else "no connector registered"


async def _routers_health(registry: Registry) -> str:
    routers = await asyncio.wait_for(registry.routers(), HEALTH_TIMEOUT * 2)
    if any(routers.values()):
        return "ok"
    return "no router serving" if routers else "no router registered"
