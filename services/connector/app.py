"""Connector process: TCP + WebSocket listeners, the internal gRPC API, registry
entry, and the periodic work (retransmits, heartbeats, cursor flushes, load)."""

from __future__ import annotations

import asyncio
import logging

from im.auth import TokenVerifier, load_keys
from im.clock import Clock
from im.config import Settings
from im.grpcutil import ChannelPool, GrpcServer, service_name
from im.ids import NODE_IDS
from im.listeners import ListenError
from im.metrics import MetricsRegistry
from im.ports import Backends, ConnectorInfo
from im.runtime import bounded, local_connectors
from im.tls import public_ssl
from im.v1 import bus_pb2, connector_pb2, connector_pb2_grpc
from services.connector import metrics as connector_metrics
from services.connector.service import ConnectorCore, ConnectorServicer
from services.connector.transport import start_tcp, start_ws

log = logging.getLogger("im.connector")

# The bus is asked less often than the rest is looked at (a Kafka health check is a
# round trip to the cluster), each time within a bound.
BUS_CHECK_EVERY = 2.0
BUS_CHECK_TIMEOUT = 3.0
PUBLISH_FAILURES_UNHEALTHY = 3


class ConnectorApp:
    name = "connector"

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        metrics: MetricsRegistry | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.metrics = metrics or MetricsRegistry()
        _, public = load_keys(settings, need_private=False)
        self.core = ConnectorCore(
            settings,
            backends,
            TokenVerifier(public, settings.jwt_issuer),
            clock=clock,
            channels=ChannelPool.for_settings(settings),
        )
        connector_metrics.register(self.metrics, self.core)
        self._ssl = public_ssl(settings)
        self._grpc = GrpcServer.for_settings(
            settings, "connector_grpc_port", interceptors=[self.metrics.grpc_server()]
        )
        self._grpc.add(
            connector_pb2_grpc.add_ConnectorServiceServicer_to_server,
            ConnectorServicer(self.core),
            service_name(connector_pb2, "ConnectorService"),
        )
        self._tcp: asyncio.Server | None = None
        self._ws = None
        self._loops: list[asyncio.Task] = []
        self._membership = None
        self._serving = True
        self._bus_ok = True  # reachable with a producer, as of the last check
        self._bus_checked_at = float("-inf")
        # Loops also end by this flag: a cancellation can be lost in a wait that
        # completes at the same moment (asyncio.wait_for on Python 3.11).
        self._stopping = False
        self.tcp_port = self.ws_port = 0

    async def start(self) -> None:
        s = self.settings
        # msg ids embed a node id no other live process holds.
        lease = await self.backends.registry.lease_node_id(self.core.connector_id, NODE_IDS)
        self.core.ids.follow(lease)
        grpc_port = await self._grpc.start()
        try:
            await self._listen()
        except BaseException:
            await self._close_listeners()
            raise
        self.core.info = ConnectorInfo(
            connector_id=self.core.connector_id,
            host=s.public_host(),
            tcp_port=self.tcp_port,
            ws_port=self.ws_port,
            grpc_port=grpc_port,
            tls=self._ssl is not None,
            grpc_host=s.internal_public_host(),
        )
        await self.backends.registry.register(self.core.info)
        local_connectors.add(self.core.connector_id, self.core.deliver)
        tick = min(0.25, s.retransmit_timeout / 4, s.auth_timeout / 4)
        idle = max(0.05, min(s.heartbeat_interval / 2, 5.0))
        # Each connector reads every membership event (its own consumer group).
        self._membership = self.backends.bus.consumer(
            [s.topic_membership],
            f"{s.router_group}.connector.{self.core.connector_id}",
            background=True,
        )
        self._loops = [
            asyncio.get_running_loop().create_task(self._follow_membership()),
            self._every(tick, self._tick),
            self._every(idle, self._sweep_idle),
            self._every(0.05, self.core.flush_cursor_reports),
            self._every(3.0, self._report_load),
            self._every(1.0, self.core.watch_presence),
            self._every(1.0, self._report_health),
        ]
        log.info(
            "connector %s: tcp %s ws %s grpc %s",
            self.core.connector_id,
            self.tcp_port,
            self.ws_port,
            grpc_port,
        )

    async def _listen(self) -> None:
        """The client listeners (TCP, WebSocket); a port that cannot be had is a
        ListenError naming its setting."""
        s = self.settings
        try:
            self._tcp = await start_tcp(self.core, s.host, s.connector_tcp_port, self._ssl)
        except OSError as exc:
            raise ListenError(
                "connector TCP", s.host, s.connector_tcp_port, "connector_tcp_port", exc
            ) from exc
        self.tcp_port = self._tcp.sockets[0].getsockname()[1]
        try:
            self._ws = await start_ws(self.core, s.host, s.connector_ws_port, self._ssl)
        except OSError as exc:
            raise ListenError(
                "connector WebSocket", s.host, s.connector_ws_port, "connector_ws_port", exc
            ) from exc
        self.ws_port = next(iter(self._ws.sockets)).getsockname()[1]

    async def _close_listeners(self) -> None:
        """After a failed start: what did open is closed again, quietly."""
        for server in (self._tcp, self._ws):
            if server is not None:
                server.close()
        self._tcp = self._ws = None
        await self._grpc.stop(0)

    async def _follow_membership(self) -> None:
        consumer = self._membership
        while not self._stopping:
            try:
                for record in await consumer.poll(500, 1.0):
                    try:
                        self.core.on_membership(bus_pb2.MembershipEvent.FromString(record.value))
                    except Exception:
                        log.error("undecodable membership event at offset %s", record.offset)
                await consumer.commit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("membership consumer failed; retrying")
                await asyncio.sleep(1.0)

    def _every(self, seconds: float, action) -> asyncio.Task:  # type: ignore[no-untyped-def]
        async def loop() -> None:
            while not self._stopping:
                await asyncio.sleep(seconds)
                try:
                    result = action()
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.exception("periodic task failed")

        return asyncio.get_running_loop().create_task(loop())

    async def _tick(self) -> None:
        self.core.tick()

    async def _sweep_idle(self) -> None:
        self.core.sweep_idle()

    def not_serving_reason(self) -> str | None:
        """Why this connector must not be handed out, or None. Not without a registry
        session (its entry is gone then: the gateway must not hand it out, routers
        cannot find it), nor without a bus to publish to (every Send would be answered
        UNAVAILABLE), nor while it drains."""
        if self.core.draining:
            return "draining"
        if not self.backends.registry.healthy():
            return "no registry session"
        if not self._bus_ok:
            return "no bus producer (the bus does not answer)"
        if self.core.publish_failures >= PUBLISH_FAILURES_UNHEALTHY:
            return f"the bus refused its last {self.core.publish_failures} publishes"
        return None

    async def _check_bus(self) -> None:
        bus = self.backends.bus
        try:
            async with asyncio.timeout(BUS_CHECK_TIMEOUT):
                self._bus_ok = await bus.healthy() and await bus.producer_ready()
        except Exception:
            self._bus_ok = False

    async def _report_health(self) -> None:
        now = self.core.clock.monotonic()
        if now - self._bus_checked_at >= BUS_CHECK_EVERY:
            self._bus_checked_at = now
            await self._check_bus()
        reason = self.not_serving_reason()
        serving = reason is None
        if serving != self._serving:
            self._serving = serving
            log.warning(
                "connector %s %s",
                self.core.connector_id,
                "serving again" if serving else f"not serving: {reason}",
            )
            await self._grpc.set_serving(serving)

    async def _report_load(self) -> None:
        info = self.core.info
        if info is not None:
            info.connections = self.core.connection_count()
            await self.backends.registry.update(info)

    async def stop(self) -> None:
        # Leave the registry first so nothing new is routed or assigned here, then
        # ask clients to reconnect elsewhere, flush what is owed, and stop. Each step
        # is bounded: SIGTERM must end the process even with every backend gone.
        local_connectors.remove(self.core.connector_id)
        registry = self.backends.registry
        await bounded("leaving the registry", registry.deregister(self.core.connector_id), 3)
        if self._tcp is not None:
            self._tcp.close()
        if self._ws is not None:
            self._ws.close(close_connections=False)
        self.core.drain()
        await bounded("background work", self.core.wait_background(), 5)
        await bounded("flushing acks and reads", self.core.flush_cursor_reports(), 3)
        self._stopping = True
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._membership is not None:
            await bounded("membership consumer", self._membership.close(), 3)
        await self._grpc.stop(1.0)
        if self._tcp is not None:
            await bounded("TCP listener", self._tcp.wait_closed(), 2)
        if self._ws is not None:
            await bounded("WebSocket listener", self._ws.wait_closed(), 2)
        self.core.signals.close()
        await self.core.channels.close()

    def endpoints(self) -> dict[str, str]:
        host = self.settings.public_host()
        info = self.core.info
        scheme = "wss" if self._ssl is not None else "ws"
        return {
            "tcp": f"{host}:{self.tcp_port}",
            "ws": f"{scheme}://{host}:{self.ws_port}/ws",
            "grpc": info.grpc_addr if info else "",
            "tls": "on" if self._ssl is not None else "off",
        }


def build(
    settings: Settings, backends: Backends, metrics: MetricsRegistry | None = None
) -> ConnectorApp:
    return ConnectorApp(settings, backends, metrics)
