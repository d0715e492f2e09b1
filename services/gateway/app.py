"""The gateway as a runnable service: uvicorn serving the FastAPI app in the current
event loop, so standalone mode runs it next to the other services, and the internal
gRPC server of server-side sends (grpc_api.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn
from fastapi import FastAPI

from im.adapters.factory import build_attachment_store, build_message_store
from im.auth import TokenIssuer, TokenVerifier, load_keys
from im.config import Settings
from im.grpcutil import GrpcServer
from im.httpserve import QuietServer, bind_socket
from im.listeners import ListenError
from im.metrics import MetricsRegistry, MetricsServer
from im.ports import AttachmentStore, Backends, MessageStore
from im.tls import public_files
from services.gateway.admin_grpc import AdminServicer, admin_server
from services.gateway.api import create_app
from services.gateway.grpc_api import message_server
from services.gateway.service import TOKEN_LEEWAY, Gateway

log = logging.getLogger("im.gateway")

STARTUP_TIMEOUT = 10.0
SHUTDOWN_GRACE = 5.0


class GatewayService:
    name = "gateway"

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        message_store: MessageStore | None = None,
        metrics: MetricsRegistry | None = None,
        attachments: AttachmentStore | None = None,
    ) -> None:
        self._settings = settings
        # Standalone: the suite's registry, so /metrics shows every service of it.
        self.metrics = metrics or MetricsRegistry()
        private, public = load_keys(settings, need_private=True)
        assert private is not None  # need_private=True guarantees it
        self._owns_store = message_store is None
        self._store = message_store or build_message_store(settings)
        self._owns_attachments = attachments is None
        self._attachments = attachments or build_attachment_store(settings)
        self.gateway = Gateway(
            settings,
            backends,
            self._store,
            TokenIssuer(private, settings.jwt_issuer, settings.jwt_ttl_seconds),
            TokenVerifier(public, settings.jwt_issuer, leeway=TOKEN_LEEWAY),
            attachments=self._attachments,
        )
        self._server: QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._port = 0
        self._metrics: MetricsServer | None = None
        self._grpc: GrpcServer | None = None
        self._admin: GrpcServer | None = None

    async def start(self) -> None:
        host, port = self._settings.host, self._settings.gateway_port
        try:
            sock = bind_socket(host, port)  # first: a taken port fails before anything opens
        except OSError as exc:
            raise ListenError("gateway HTTP", host, port, "gateway_port", exc) from exc
        try:
            await self.gateway.open()
            await self._start_grpc()
        except BaseException:
            sock.close()
            await self._close_after_failure()
            raise
        tls = public_files(self._settings)
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._create_app(),
            log_level="warning",
            # uvicorn's records go to the process's handler (text or JSON: im.logs),
            # not to handlers of its own.
            log_config=None,
            access_log=False,
            lifespan="off",  # start/stop are ours
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
            server_header=False,
            # X-Forwarded-For is ours to judge (IM_TRUSTED_PROXIES), not uvicorn's: it
            # would believe any loopback peer by default.
            proxy_headers=False,
            # Longer than clients' and load balancers' idle pools, so the server is not
            # the side that closes an idle keep-alive connection (a request sent on it
            # at that moment fails with "server disconnected").
            timeout_keep_alive=75,
            backlog=2048,
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
        )
        self._server = QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="gateway-http")
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT
        while not self._server.started:
            if self._task.done() or asyncio.get_running_loop().time() > deadline:
                sock.close()
                error = self._task.exception() if self._task.done() else None
                await self._close_after_failure()
                raise RuntimeError(f"gateway HTTP server did not start: {error!r}")
            await asyncio.sleep(0.01)
        if self._metrics is not None:
            await self._metrics.start()
        await self._start_admin()
        log.info("gateway listening on %s", self.endpoints()["http"])

    async def _start_admin(self) -> None:
        """The AdminService's internal gRPC server, only while an admin token is set."""
        if not self.gateway.admin_guard.tokens.enabled:
            return
        servicer = AdminServicer(self.gateway.admin, self.gateway.admin_guard)
        self._admin = admin_server(self._settings, servicer)
        try:
            await self._admin.start()
        except BaseException:
            self._admin = None
            await self.stop()
            raise

    async def _start_grpc(self) -> None:
        """MessageService.Send for internal callers (a taken port is a ListenError)."""
        server = message_server(self._settings, self.gateway.messages, [self.metrics.grpc_server()])
        await server.start()
        self._grpc = server
        log.info("gateway gRPC (MessageService) on %s", self.endpoints()["grpc"])

    def _create_app(self) -> FastAPI:
        """The API app, with /metrics on it or, apart from it, on the internal port."""
        on_api = metrics_on_api(self._settings)
        app = create_app(self.gateway, metrics_on_api=on_api, registry=self.metrics.registry)
        if not on_api:
            self._metrics = MetricsServer(
                self._settings.internal_host,
                self._settings.gateway_metrics_port,
                self.metrics.registry,
                "gateway",
            )
        return app

    async def _close_after_failure(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._stop_grpc(0)
        await self.gateway.close()

    async def _stop_grpc(self, grace: float) -> None:
        if self._grpc is not None:
            grpc_server, self._grpc = self._grpc, None
            await grpc_server.stop(grace)

    async def stop(self) -> None:
        if self._admin is not None:
            await self._admin.stop(1.0)
            self._admin = None
        if self._metrics is not None:
            await self._metrics.stop()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._task), SHUTDOWN_GRACE + 5)
            except TimeoutError:
                self._server.force_exit = True
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            except Exception:
                log.exception("gateway HTTP server failed")
            self._server = None
            self._task = None
        await self._stop_grpc(2.0)
        await self.gateway.close()
        if self._owns_store:
            await self._store.close()
        if self._owns_attachments:
            await self._attachments.close()

    def endpoints(self) -> dict[str, str]:
        host = self._settings.public_host()
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self._settings.public_tls() else "http"
        endpoints = {"http": f"{scheme}://{host}:{self._port}"}
        if self._grpc is not None and self._grpc.port:
            endpoints["grpc"] = f"{self._settings.internal_public_host()}:{self._grpc.port}"
        if self._metrics is not None and self._metrics.port:
            endpoints["metrics"] = self._metrics.url()
        if self._admin is not None and self._admin.port:
            endpoints["admin_grpc"] = f"{self._settings.internal_public_host()}:{self._admin.port}"
        return endpoints


def metrics_on_api(settings: Settings) -> bool:
    """``auto``: on the API port in standalone only (an in-process registry), where the
    API port is a developer's; a deployment's public port must not expose it."""
    if settings.gateway_metrics == "auto":
        return settings.registry_url.startswith("memory://")
    return settings.gateway_metrics == "api"


def build(
    settings: Settings,
    backends: Backends,
    message_store: MessageStore | None = None,
    metrics: MetricsRegistry | None = None,
) -> GatewayService:
    """The gateway service; it builds its own message store unless one is given, and
    a metrics registry of its own unless it shares one (standalone: the suite's)."""
    return GatewayService(settings, backends, message_store, metrics)
