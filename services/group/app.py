"""Group service process: the SQL database and a gRPC server with health and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from im.config import Settings
from im.db import create_schema, make_engine
from im.grpcutil import GrpcServer, service_name
from im.ports import Backends
from im.runtime import Service
from im.v1 import group_pb2, group_pb2_grpc
from services.group.service import GroupServicer

log = logging.getLogger("im.group")

# How often readiness re-checks the database (health follows the real request path).
DB_CHECK_SECONDS = 5.0


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


class GroupApp:
    name = "group"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._servicer: GroupServicer | None = None
        self._server: GrpcServer | None = None
        self._watch: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        s = self.settings
        self._engine = await asyncio.to_thread(
            open_database, s.resolved_database_url(), s.auto_migrate
        )
        self._servicer = GroupServicer(s, self._engine)
        self._server = GrpcServer(s.host, s.group_grpc_port)
        self._server.add(
            group_pb2_grpc.add_GroupServiceServicer_to_server,
            self._servicer,
            service_name(group_pb2, "GroupService"),
        )
        self.port = await self._server.start()
        self._watch = asyncio.get_running_loop().create_task(self._watch_database())
        log.info("group service: grpc %s", self.endpoints()["grpc"])

    async def _watch_database(self) -> None:
        assert self._engine is not None and self._server is not None
        serving = True
        while True:
            await asyncio.sleep(DB_CHECK_SECONDS)
            alive = await asyncio.to_thread(database_alive, self._engine)
            if alive != serving:
                log.warning("group database %s", "is back" if alive else "unreachable")
                serving = alive
                await self._server.set_serving(alive)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._server is not None:
            await self._server.stop(2.0)
        if self._engine is not None:
            self._engine.dispose()

    def endpoints(self) -> dict[str, str]:
        return {"grpc": f"{self.settings.public_host()}:{self.port}"}


def build(settings: Settings, backends: Backends | None = None) -> Service:
    # The group service needs only the SQL database; backends are accepted for the
    # common factory signature.
    return GroupApp(settings)
