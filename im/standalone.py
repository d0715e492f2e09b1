"""Running services: all five in one process (standalone), or one per process."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys

from im import datadir, logs
from im.adapters import build_backends
from im.config import Settings
from im.grpcutil import InsecureInternalError, require_internal_security
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
        settings = self.settings
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
            await bounded("closing the backends", self.backends.close(), 10)

    def endpoints(self) -> dict[str, dict[str, str]]:
        return {name: s.endpoints() for name, s in self.services.items()}


def describe(suite: Suite) -> str:
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
        "Or in two terminals:",
        f"  imctl --gateway {gw} register alice --password alicepass1",
        f"  imctl --gateway {gw} register bob --password bobpass123",
        f"  imctl --gateway {gw} chat --user bob --password bobpass123 --to alice",
        f"  imctl --gateway {gw} chat --user alice --password alicepass1 --to bob",
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
        await service.start()
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


def main_for(name: str) -> None:
    """`python -m services.<name>`: one service from environment configuration."""
    settings = Settings()
    setup_logging(settings, name)
    install_uvloop()
    try:
        asyncio.run(serve_one(name, settings))
    except KeyboardInterrupt:
        sys.exit(130)
