"""What every service looks like to the process that runs it.

Each ``services/<name>/app.py`` exposes ``build(settings, backends) -> Service``;
``imctl serve <name>`` runs one, ``imctl standalone`` runs all five in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from im import logs, tracing
from im.config import Settings
from im.ports import Backends

log = logging.getLogger("im")


class Service(Protocol):
    name: str

    async def start(self) -> None:
        """Bind and start serving; return once ready."""
        ...

    async def stop(self) -> None:
        """Stop gracefully (drain what is in flight)."""
        ...

    def endpoints(self) -> dict[str, str]:
        """Where it listens, e.g. {"grpc": "127.0.0.1:50051"} (actual bound ports)."""
        ...


ServiceFactory = Callable[[Settings, Backends], Service]


class LocalConnectors:
    """Connectors running in this process (standalone mode), by connector id.

    The router hands a batch to a local connector by a plain call instead of a gRPC
    round trip through its own process; remote connectors still get gRPC. The
    connector's Deliver servicer and this path run the same ``deliver`` method.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, Callable[[Any], Any]] = {}

    def add(self, connector_id: str, deliver: Callable[[Any], Any]) -> None:
        self._by_id[connector_id] = deliver

    def remove(self, connector_id: str) -> None:
        self._by_id.pop(connector_id, None)

    def get(self, connector_id: str) -> Callable[[Any], Any] | None:
        return self._by_id.get(connector_id)


local_connectors = LocalConnectors()


async def bounded(what: str, operation: Awaitable[Any], seconds: float) -> None:
    """One step of a graceful stop: it may fail or hang (its backend is gone), and
    the stop goes on either way after ``seconds``, so SIGTERM always ends the process
    within its grace period."""
    try:
        async with asyncio.timeout(seconds):
            await operation
    except TimeoutError:
        log.warning("stopping: %s took over %.0f s; going on without it", what, seconds)
    except Exception as exc:
        log.warning("stopping: %s failed (%r); going on", what, exc)


# Libraries whose INFO lines say nothing an operator needs (alembic lists its plugins
# and each migration step at every start-up; websockets logs every connection opened
# and closed): shown only at DEBUG.
QUIET_LOGGERS = ("alembic", "websockets.server")


def setup_logging(settings: Settings, service: str = "") -> None:
    """Logs (text or JSON, with context) and traces (only with an OTLP endpoint) of
    this process; ``service`` names a process that runs one service."""
    logs.setup(settings.log_level, settings.log_format, service)
    tracing.setup(settings.otlp_endpoint, service)
    quiet_libraries(settings.log_level)


def quiet_libraries(level: str) -> None:
    """QUIET_LOGGERS at WARNING unless ``level`` is DEBUG."""
    verbose = logging.getLevelNamesMapping().get(level.upper(), logging.INFO) <= logging.DEBUG
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


def install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def run_until_signal(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Start, then wait for SIGTERM/SIGINT, then stop."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, done.set)
    await start()
    try:
        await done.wait()
    finally:
        log.info("stopping")
        await stop()
