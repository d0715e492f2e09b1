"""Router process: one member of the routers' consumer group."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from im.adapters import build_message_store
from im.config import Settings
from im.grpcutil import GrpcServer
from im.ports import Backends, BusConsumer, MessageStore
from services.router.service import Router

log = logging.getLogger("im.router")


class RouterApp:
    name = "router"

    def __init__(
        self, settings: Settings, backends: Backends, store: MessageStore | None = None
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.store = store or build_message_store(settings)
        self.router = Router(settings, backends, self.store)
        self._consumer: BusConsumer | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._health_task: asyncio.Task | None = None
        # Health and reflection only: probes see whether batches go through (a
        # router whose store or bus fails keeps running but reports NOT_SERVING).
        self._grpc = GrpcServer(settings.host, settings.router_grpc_port)

    async def _watch_health(self) -> None:
        serving = True
        while True:
            await asyncio.sleep(1.0)
            now_serving = self.router.failing < 3
            if now_serving != serving:
                serving = now_serving
                log.warning("router %s", "recovered" if serving else "is failing its batches")
                await self._grpc.set_serving(serving)

    async def start(self) -> None:
        s = self.settings
        await self._grpc.start()
        self._health_task = asyncio.get_running_loop().create_task(self._watch_health())
        self._consumer = self.backends.bus.consumer(
            [s.topic_messages, s.topic_cursors, s.topic_membership], s.router_group
        )
        self._task = asyncio.get_running_loop().create_task(
            self.router.run(self._consumer, self._stop)
        )

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.router.flush(), 5)
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
        await self._grpc.stop(0.5)
        if self._consumer is not None:
            await self._consumer.close()
        await self.router.channels.close()
        await self.store.close()

    def endpoints(self) -> dict[str, str]:
        return {
            "grpc": f"{self.settings.public_host()}:{self._grpc.port}",
            "bus": f"{self.settings.bus_url} group {self.settings.router_group}",
        }


def build(settings: Settings, backends: Backends) -> RouterApp:
    return RouterApp(settings, backends)
