"""What every scenario shares: its context, its result, and the helpers that
register and log in its users."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from im.bench.limits import wait_idle
from im.bench.suites import Relay, Target

PASSWORD = "bench-password-1"


class Skip(Exception):
    """The scenario cannot run against this suite (e.g. an API it needs is missing)."""


@dataclass
class Context:
    opts: Any  # argparse.Namespace of `imctl bench`
    target: Target
    relay: Relay | None
    run_id: str
    procs: int
    log: Any = print
    idle_cpu_pct: float | None = None  # the suite's, before any load (None: not measured)


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)


@dataclass
class ScenarioResult:
    name: str
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    tables: list[Table] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


# ------------------------------------------------------------------ helpers


def run_sync(coro: Any) -> Any:
    return asyncio.run(coro)


async def register(gateway: str, names: list[str], concurrency: int = 8) -> list[int]:
    from im.client import GatewayClient

    sem = asyncio.Semaphore(concurrency)
    ids: list[int] = [0] * len(names)

    async def one(i: int) -> None:
        async with sem, GatewayClient(gateway, timeout=60) as gw:
            ids[i] = int((await gw.register(names[i], PASSWORD))["user_id"])

    await asyncio.gather(*(one(i) for i in range(len(names))))
    return ids


async def login(gateway: str, names: list[str], device: str, concurrency: int = 8) -> list[Any]:
    from im.client import GatewayClient

    sem = asyncio.Semaphore(concurrency)
    out: list[Any] = [None] * len(names)

    async def one(i: int) -> None:
        async with sem, GatewayClient(gateway, timeout=60) as gw:
            out[i] = await gw.login(names[i], PASSWORD, device)

    await asyncio.gather(*(one(i) for i in range(len(names))))
    return out


def user_names(ctx: Context, scenario: str, count: int) -> list[str]:
    return [f"b{ctx.run_id}_{scenario}_{i}" for i in range(count)]


def split(items: list[Any], parts: int) -> list[list[Any]]:
    parts = max(1, min(parts, len(items))) if items else 1
    return [items[i::parts] for i in range(parts)]


def settle(ctx: Context) -> None:
    """Let the servers finish what a previous phase queued before measuring again."""
    pids = list(ctx.target.pids.values())
    if ctx.relay is not None:
        pids.append(ctx.relay.pid)
    if pids:
        wait_idle(pids)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"
