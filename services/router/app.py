"""Router process: one member of the routers' consumer group, announced in the
registry (so the gateway's readiness knows whether any router serves)."""

from __future__ import annotations

import asyncio
import logging

from im.adapters import build_message_store, build_push_notifier
from im.adapters.factory import build_attachment_store
from im.clock import Clock
from im.config import Settings
from im.grpcutil import ChannelPool, GrpcServer
from im.metrics import MetricsRegistry
from im.ports import AttachmentStore, Backends, BusConsumer, MessageStore
from im.runtime import bounded
from services.router import metrics as router_metrics
from services.router.service import Router

log = logging.getLogger("im.router")

HEALTH_EVERY = 0.25
# The registry entry is written on every change, and again this often in case it was
# lost with a registry that forgot its data.
ANNOUNCE_EVERY = 15.0
# The bus and presence are asked less often than the rest is looked at: a Kafka health
# check is a round trip to the cluster.
BACKEND_CHECK_EVERY = 2.0
BACKEND_CHECK_TIMEOUT = 3.0
FAILED_BATCHES_UNHEALTHY = 3
# A loop turn takes at most a poll (0.5 s) plus a batch; one that has not completed
# for this long is stuck on something (a backend call without an answer).
STALLED_AFTER = 30.0


class RouterApp:
    name = "router"

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        store: MessageStore | None = None,
        metrics: MetricsRegistry | None = None,
        clock: Clock | None = None,
        attachments: AttachmentStore | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.metrics = metrics or MetricsRegistry()
        self.store = store or build_message_store(settings)
        self.attachments = attachments or build_attachment_store(settings)
        self.router = Router(
            settings,
            backends,
            self.store,
            channels=ChannelPool.for_settings(settings),
            clock=clock,
            attachments=self.attachments,
            push=build_push_notifier(settings),
        )
        self.router_id = settings.resolved_router_id()
        self._consumer: BusConsumer | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._health_task: asyncio.Task | None = None
        self._serving = False
        self._backends_ok = True  # bus and presence, as of the last check
        # Health only: probes see whether batches go through (a
        # router whose store or bus fails keeps running but reports NOT_SERVING).
        self._grpc = GrpcServer.for_settings(
            settings, "router_grpc_port", interceptors=[self.metrics.grpc_server()]
        )
        router_metrics.register(self.metrics, self.router, lambda: self._consumer)

    def serving(self) -> bool:
        return self.not_serving_reason() is None

    def not_serving_reason(self) -> str | None:
        """Why batches do not go through, or None when they do: the consumer joined
        its group and holds partitions (none for longer than a rebalance: another
        router has them all, or the join went wrong), the last batches did not fail,
        the loop is not stuck, and the bus and presence answer (a poll against a dead
        broker just comes back empty, it does not fail)."""
        router = self.router
        if not router.joined:
            return "has not joined its consumer group"
        unassigned = router.unassigned_for()
        if unassigned > self.settings.router_unassigned_timeout:
            return f"has held no partition for {unassigned:.0f} s"
        if router.failing >= FAILED_BATCHES_UNHEALTHY:
            return f"its last {router.failing} batches failed"
        if router.clock.monotonic() - router.last_progress > STALLED_AFTER:
            return "its loop is stuck"
        if not self._backends_ok:
            return "the bus or presence does not answer"
        return None

    async def _check_backends(self) -> None:
        checks = (self.backends.bus.healthy(), self.backends.presence.healthy())
        try:
            async with asyncio.timeout(BACKEND_CHECK_TIMEOUT):
                results = await asyncio.gather(*checks)
        except Exception:
            results = [False]
        self._backends_ok = all(results)

    async def _watch_health(self) -> None:
        clock = self.router.clock
        announced_at = clock.monotonic()
        checked_at = -BACKEND_CHECK_EVERY
        while True:
            await asyncio.sleep(HEALTH_EVERY)
            if clock.monotonic() - checked_at >= BACKEND_CHECK_EVERY:
                checked_at = clock.monotonic()
                await self._check_backends()
            reason = self.not_serving_reason()
            now_serving = reason is None
            changed = now_serving != self._serving
            if changed:
                self._serving = now_serving
                log.log(
                    logging.INFO if now_serving else logging.WARNING,
                    "router %s %s",
                    self.router_id,
                    "serving" if now_serving else f"is not serving: {reason}",
                )
                await self._grpc.set_serving(now_serving)
            if changed or clock.monotonic() - announced_at > ANNOUNCE_EVERY:
                announced_at = clock.monotonic()
                await self._announce(now_serving)

    async def _announce(self, serving: bool) -> None:
        try:
            await self.backends.registry.announce_router(self.router_id, serving)
        except Exception as exc:
            log.warning("could not announce router %s: %r", self.router_id, exc)

    async def start(self) -> None:
        s = self.settings
        await self._grpc.start()
        await self._grpc.set_serving(False)  # until the consumer joined its group
        await self.backends.registry.announce_router(self.router_id, False)
        self._health_task = asyncio.get_running_loop().create_task(self._watch_health())
        if self.router.push is not None:
            await self.router.push.start()
        self._consumer = self.backends.bus.consumer(
            [s.topic_messages, s.topic_cursors, s.topic_membership], s.router_group
        )
        self._task = asyncio.get_running_loop().create_task(
            self.router.run(self._consumer, self._stop)
        )

    async def stop(self) -> None:
        # Each step bounded: SIGTERM must end the process even with every backend gone.
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            # What the connectors handed over before they stopped is stored now,
            # not left to a bus that may not outlive this process (standalone).
            await bounded("storing what is on the bus", self.router.drain(self._consumer), 5)
        await bounded("deliveries in flight", self.router.flush(), 5)
        if self.router.push is not None:
            await bounded("push notifications", self.router.push.close(), 5)
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
        await bounded(
            "leaving the registry", self.backends.registry.withdraw_router(self.router_id), 3
        )
        await self._grpc.stop(0.5)
        if self._consumer is not None:
            await bounded("leaving the consumer group", self._consumer.close(), 5)
        self.router.delivery.close()
        await self.router.channels.close()
        await bounded("closing the message store", self.store.close(), 3)
        await bounded("closing the attachment store", self.attachments.close(), 3)

    def endpoints(self) -> dict[str, str]:
        return {
            "grpc": f"{self.settings.internal_public_host()}:{self._grpc.port}",
            "bus": f"{self.settings.bus_url} group {self.settings.router_group}",
        }


def build(
    settings: Settings, backends: Backends, metrics: MetricsRegistry | None = None
) -> RouterApp:
    return RouterApp(settings, backends, metrics=metrics)
