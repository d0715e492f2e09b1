"""Running services: all five in one process (standalone), or one per process."""

from __future__ import annotations

import asyncio
import importlib
import logging
import shutil
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from im import datadir, logs
from im.adapters import build_backends
from im.config import Settings
from im.grpcutil import InsecureInternalError, require_internal_security
from im.listeners import ListenError, check_ports
from im.metrics import MetricsRegistry, MetricsServer
from im.ports import Backends
from im.runtime import Service, bounded, install_uvloop, run_until_signal, setup_logging
from im.tls import with_dev_internal_certs

log = logging.getLogger("im")

SERVICES = ("user", "group", "connector", "router", "gateway")
STOP_ORDER = ("gateway", "connector", "router", "group", "user")


def build_service(
    name: str, settings: Settings, backends: Backends, metrics: MetricsRegistry | None = None
) -> Service:
    """One service; its metrics go to ``metrics`` (the process's or the suite's)."""
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; one of {', '.join(SERVICES)}")
    module = importlib.import_module(f"services.{name}.app")
    return module.build(settings, backends, metrics=metrics)


class Suite:
    """All five services in this process, started in dependency order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: dict[str, Service] = {}
        self.backends: Backends | None = None
        # One registry for the suite, served by the gateway's /metrics: every service
        # registers there, and suites side by side in one process (tests) never share.
        self.metrics = MetricsRegistry()

    async def start(self) -> None:
        """Start every service; when one fails, those already started are stopped
        again before the error goes on (nothing is left half running)."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.settings
        check_ports(settings, SERVICES)  # a taken port: one line, nothing started
        datadir.prepare(settings.data_dir)  # 0700, files 0600, umask 077
        settings = with_dev_internal_certs(settings)  # mutual TLS between the services
        self.backends = build_backends(settings)
        await self.backends.start()
        for name in SERVICES:
            # The tasks and servers a service starts inherit this: their log lines
            # name the service (all five share the process).
            with logs.bound(service=name):
                service = build_service(name, settings, self.backends, self.metrics)
                await service.start()
            self.services[name] = service
            if name in ("user", "group"):
                # Later services call the bound port (it may have been 0).
                addr = service.endpoints()["grpc"]
                key = "user_service_addr" if name == "user" else "group_service_addr"
                settings = settings.model_copy(update={key: addr})
        self.settings = settings

    async def stop(self) -> None:
        # Stop taking requests before the services behind them go: the gateway, then
        # the connectors (no more Sends), then the router (it stores what the
        # connectors handed over), then the services everything calls.
        for name in STOP_ORDER:
            if name not in self.services:
                continue
            try:
                await self.services[name].stop()
            except Exception:
                log.exception("stopping %s failed", name)
        self.services.clear()
        if self.backends is not None:
            backends, self.backends = self.backends, None
            await bounded("closing the backends", backends.close(), 10)

    def endpoints(self) -> dict[str, dict[str, str]]:
        return {name: s.endpoints() for name, s in self.services.items()}


DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"


def imctl_command() -> str:
    """How to run imctl from here: ``imctl`` when that name on PATH is this very
    program, else its path (relative to the working directory when under it, e.g.
    ``.venv/bin/imctl`` after ``make run``)."""
    mine = Path(sys.executable).with_name("imctl")  # the venv's, beside its python
    found = shutil.which("imctl")
    if found is not None and (not mine.exists() or Path(found).resolve() == mine.resolve()):
        return "imctl"
    if not mine.exists():
        return f"{sys.executable} -m im.cli"
    try:
        return str(mine.relative_to(Path.cwd()))
    except ValueError:
        return str(mine)


def describe(suite: Suite, imctl: str | None = None) -> str:
    eps = suite.endpoints()
    gw = eps["gateway"]["http"]
    lines = ["im standalone suite is up:"]
    for name, where in eps.items():
        lines.append(f"  {name:<10} " + "  ".join(f"{k}={v}" for k, v in where.items()))
    lines += [
        f"  data dir   {suite.settings.data_dir.resolve()}",
        "",
        f"Gateway {gw} (API docs at {gw}/docs).",
        f"Chat in the browser: open {gw}/ in two tabs, register a user in each.",
        "Or in two more terminals:",
    ]
    run = imctl or imctl_command()
    if gw != DEFAULT_GATEWAY_URL:
        run += f" --gateway {gw}"  # or: export IM_GATEWAY_URL={gw}
    lines += [
        f"  {run} register alice --password alicepass1",
        f"  {run} register bob --password bobpass123",
        f"  {run} chat --user alice --password alicepass1 --to bob",
        f"  {run} chat --user bob --password bobpass123 --to alice",
        "Stop with Ctrl-C.",
    ]
    return "\n".join(lines)


async def run_standalone(settings: Settings) -> None:
    suite = Suite(settings)

    async def start() -> None:
        await suite.start()
        print(describe(suite), flush=True)

    await run_until_signal(start, suite.stop)


async def serve_one(name: str, settings: Settings) -> None:
    try:
        require_internal_security(settings)
    except InsecureInternalError as exc:
        raise SystemExit(f"{name}: {exc}") from None
    check_ports(settings, [name])  # a taken port: one line, nothing started
    backends = build_backends(settings, client_id=f"im-{name}")
    metrics = MetricsRegistry()
    service = build_service(name, settings, backends, metrics)
    # The gateway serves its registry itself (IM_GATEWAY_METRICS, on its API port or
    # IM_GATEWAY_METRICS_PORT); every other process on IM_METRICS_PORT.
    exposition = None
    if name != "gateway":
        exposition = MetricsServer(
            settings.internal_host, settings.metrics_port, metrics.registry, name
        )

    async def start() -> None:
        await backends.start()
        try:
            await service.start()
        except BaseException:
            await bounded("closing the backends", backends.close(), 10)
            raise
        endpoints = service.endpoints()
        if exposition is not None:
            await exposition.start()
            if exposition.port:
                endpoints["metrics"] = exposition.url()
        where = "  ".join(f"{k}={v}" for k, v in endpoints.items())
        print(f"{name} is up: {where}", flush=True)

    async def stop() -> None:
        await service.stop()
        if exposition is not None:
            await exposition.stop()
        await bounded("closing the backends", backends.close(), 10)

    await run_until_signal(start, stop)


def run_servers(main: Coroutine[Any, Any, None], program: str) -> int:
    """Run a server coroutine to its end: 0 after a clean stop, 1 with one line on
    stderr when a port cannot be had (which setting to change), 130 on Ctrl-C."""
    try:
        asyncio.run(main)
    except ListenError as exc:
        print(f"{program}: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def main_for(name: str) -> None:
    """`python -m services.<name>`: one service from environment configuration."""
    settings = Settings()
    setup_logging(settings, name)
    install_uvloop()
    sys.exit(run_servers(serve_one(name, settings), f"services.{name}"))
