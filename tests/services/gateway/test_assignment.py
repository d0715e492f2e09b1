"""Connector assignment: a connector that fails its health check is not handed out."""

from __future__ import annotations

import socket

from im.adapters.memory import MemoryRegistry
from im.grpcutil import ChannelPool, GrpcServer
from im.ports import ConnectorInfo
from services.gateway.assignment import ConnectorProber, pick_connector


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def info(connector_id: str, port: int, connections: int = 0) -> ConnectorInfo:
    return ConnectorInfo(connector_id, "127.0.0.1", 1, 2, port, connections=connections)


async def test_dead_and_not_serving_connectors_are_not_handed_out() -> None:
    healthy, ailing = GrpcServer("127.0.0.1", 0), GrpcServer("127.0.0.1", 0)
    registry, pool = MemoryRegistry(), ChannelPool()
    prober = ConnectorProber(registry, pool)
    try:
        await registry.register(info("alive", await healthy.start(), connections=50))
        await registry.register(info("ailing", await ailing.start()))
        await registry.register(info("dead", dead_port()))  # killed, still listed
        await ailing.set_serving(False)  # e.g. lost its bus or registry session
        await prober.probe_all()
        assert prober.down == {"ailing", "dead"}
        usable = prober.usable(await registry.connectors())
        assert [c.connector_id for c in usable] == ["alive"]
        # The busiest live one beats an idle dead one; a device on a dead one moves.
        assert pick_connector(usable, current_connector_id="dead").connector_id == "alive"

        await ailing.set_serving(True)  # recovered: handed out again at the next probe
        await prober.probe_all()
        assert prober.down == {"dead"}
    finally:
        await healthy.stop(0)
        await ailing.stop(0)
        await pool.close()


async def test_when_no_connector_answers_all_are_offered() -> None:
    registry, pool = MemoryRegistry(), ChannelPool()
    prober = ConnectorProber(registry, pool)
    try:
        await registry.register(info("a", dead_port()))
        await prober.probe_all()
        assert [c.connector_id for c in prober.usable(await registry.connectors())] == ["a"]
    finally:
        await pool.close()
