"""The shape shared by the SQL-backed gRPC services (user, group): open the database
(migrating it if configured), serve one servicer with health (mutual TLS when
configured), and keep
the health status following the database."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from im.config import Settings
from im.db import create_schema, make_engine
from im.grpcutil import GrpcServer
from im.metrics import MetricsRegistry

# How often readiness re-checks the database (health follows the real request path).
DB_CHECK_SECONDS = 5.0


class ServiceError(Exception):
    """A request the service refuses, with the gRPC status that says why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_R = TypeVar("_R")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[_R]]


def rpc_errors(service: str) -> Callable[[Handler[_R]], Handler[_R]]:
    """Decorates servicer methods: ServiceError -> its status, a database outage ->
    UNAVAILABLE (logged), so handlers raise instead of aborting by hand."""
    log = logging.getLogger(f"im.{service}")

    def decorate(handler: Handler[_R]) -> Handler[_R]:
        @functools.wraps(handler)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> _R:
            try:
                return await handler(self, request, context)
            except ServiceError as exc:
                await context.abort(exc.code, exc.message)
            except DBAPIError:
                log.exception("%s: database error", handler.__name__)
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"{service} database unavailable")
            raise AssertionError("unreachable: context.abort raises")

        return wrapper

    return decorate


def open_database(url: str, create_tables: bool) -> Engine:
    """An engine, with the schema created if asked. Blocking: call it in a thread."""
    engine = make_engine(url)
    if not create_tables:
        return engine  # deployments that migrate separately (`imctl db upgrade`)
    try:
        create_schema(engine)
    except OperationalError:
        # Another service of the same process may have created the tables between
        # our existence check and our CREATE; the second pass finds them.
        create_schema(engine)
    return engine


def database_alive(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


class SqlGrpcService:
    """One gRPC servicer on one SQL database. Subclasses name the parts."""

    name = ""
    port_setting = ""  # the Settings field with this service's port
    register: Callable[[Any, Any], None]  # add_XServicer_to_server
    service_name = ""  # full gRPC service name, for reflection and health

    def __init__(self, settings: Settings, metrics: MetricsRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or MetricsRegistry()
        self.log = logging.getLogger(f"im.{self.name}")
        self._engine: Engine | None = None
        self._servicer: Any = None
        self._server: GrpcServer | None = None
        self._watch: asyncio.Task[None] | None = None
        self.port = 0

    def make_servicer(self, settings: Settings, engine: Engine) -> Any:
        raise NotImplementedError

    def more_servicers(self, engine: Engine) -> list[tuple[Callable[[Any, Any], None], Any, str]]:
        """Further (register, servicer, service name) on the same server, made after
        ``make_servicer``; none by default."""
        return []

    async def start(self) -> None:
        s = self.settings
        self._engine = await asyncio.to_thread(
            open_database, s.resolved_database_url(), s.auto_migrate
        )
        self._servicer = self.make_servicer(s, self._engine)
        self._server = GrpcServer.for_settings(
            s, self.port_setting, interceptors=[self.metrics.grpc_server()]
        )
        self._server.add(type(self).register, self._servicer, self.service_name)
        for register, servicer, name in self.more_servicers(self._engine):
            self._server.add(register, servicer, name)
        self.port = await self._server.start()
        self._watch = asyncio.get_running_loop().create_task(self._watch_database())
        self.log.info("%s service: grpc %s", self.name, self.endpoints()["grpc"])

    async def _watch_database(self) -> None:
        assert self._engine is not None and self._server is not None
        serving = True
        while True:
            await asyncio.sleep(DB_CHECK_SECONDS)
            alive = await asyncio.to_thread(database_alive, self._engine)
            if alive != serving:
                self.log.warning("%s database %s", self.name, "is back" if alive else "down")
                serving = alive
                await self._server.set_serving(alive)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._server is not None:
            await self._server.stop(2.0)
        close = getattr(self._servicer, "close", None)
        if close is not None:
            await close()
        if self._engine is not None:
            self._engine.dispose()

    def endpoints(self) -> dict[str, str]:
        return {"grpc": f"{self.settings.internal_public_host()}:{self.port}"}
