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
from typing import Protocol

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


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
