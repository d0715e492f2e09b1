"""Connector process: TCP + WebSocket listeners, the internal gRPC API, registry
entry, and the periodic work (retransmits, heartbeats, cursor flushes, load)."""

from __future__ import annotations

import asyncio
import logging

from im.auth import TokenVerifier, load_keys
from im.config import Settings
from im.grpcutil import ChannelPool, GrpcServer, service_name
from im.ids import NODE_IDS
from im.listeners import ListenError
from im.ports import Backends, ConnectorInfo
from im.runtime import bounded, local_connectors
from im.tls import public_ssl
from im.v1 import bus_pb2, connector_pb2, connector_pb2_grpc
from services.connector.service import ConnectorCore, ConnectorServicer
from services.connector.transport import start_tcp, start_ws

log = logging.getLogger("im.connector")


class ConnectorApp:
    name = "connector"

    def __init__(self, settings: Settings, backends: Backends) -> None:
        self.settings = settings
        self.backends = backends
        _, public = load_keys(settings, need_private=False)
        self.core = ConnectorCore(
            settings,
            backends,
            TokenVerifier(public, settings.jwt_issuer),
            channels=ChannelPool.for_settings(settings),
        )
        self._ssl = public_ssl(settings)
        self._grpc = GrpcServer.for_settings(settings, "connector_grpc_port")
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

    async def _report_health(self) -> None:
        # Not serving while it cannot publish, drains, or has no registry session
        # (its entry is gone then: the gateway must not hand it out, routers cannot
        # find it).
        serving = (
            self.core.publish_failures < 3
            and not self.core.draining
            and self.backends.registry.healthy()
        )
        if serving != self._serving:
            self._serving = serving
            log.warning(
                "connector %s %s",
                self.core.connector_id,
                "serving again" if serving else "not serving (bus, registry or draining)",
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


def build(settings: Settings, backends: Backends) -> ConnectorApp:
    return ConnectorApp(settings, backends)
