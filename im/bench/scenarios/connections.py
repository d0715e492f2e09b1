"""Scenario ``connections``: authenticated connections held on one connector (and on
the relay), the connector's RSS per connection."""

from __future__ import annotations

import math
import time
import uuid
from array import array
from typing import Any

from im.bench.limits import ephemeral_ports, rss_kib
from im.bench.procs import WorkerPool
from im.bench.scenarios.common import (
    PASSWORD,
    Context,
    ScenarioResult,
    Table,
    login,
    register,
    run_sync,
    settle,
    split,
    user_names,
)
from im.bench.stats import summarize


def _connector_for(ctx: Context) -> tuple[str, str]:
    """(connector id, tcp address) of one connector, from a real login."""
    names = user_names(ctx, "c", 1)
    run_sync(register(ctx.target.gateway, names))
    (lg,) = run_sync(login(ctx.target.gateway, names, "bench-conn-probe"))
    return lg.connector.id, lg.connector.tcp


def _hold(ctx: Context, count: int, auth_for: Any, pid: int | None, label: str) -> dict[str, Any]:
    opts = ctx.opts
    per = split(list(range(count)), ctx.procs)
    ports = ephemeral_ports()
    local_ips = None
    if count > int(ports * 0.8):
        k = math.ceil(count / (ports * 0.8))
        local_ips = [f"127.0.0.{i + 1}" for i in range(k)]
    specs = [
        {
            "auth": auth_for(idx),
            "heartbeat": opts.heartbeat,
            "hold": opts.hold,
            "local_ips": local_ips,
            "connect_concurrency": opts.connect_concurrency,
            "nofile": len(idx) + 1000,
        }
        for idx in per
        if idx
    ]
    settle(ctx)
    before = rss_kib(pid) if pid else None
    ctx.log(f"  [connections] {label}: opening {count} connections from {len(specs)} processes")
    with WorkerPool("connections", specs) as pool:
        infos = pool.ready(timeout=max(300.0, count / 50))
        time.sleep(2.0)
        after_connect = rss_kib(pid) if pid else None
        pool.go()
        results = pool.results(timeout=opts.hold + 120)
        after_hold = rss_kib(pid) if pid else None
    opened = sum(i["opened"] for i in infos)
    held = sum(r["held"] for r in results)
    failures: dict[str, int] = {}
    drops: dict[str, int] = {}
    for i in infos:
        for k, v in i["failures"].items():
            failures[k] = failures.get(k, 0) + v
    for r in results:
        for k, v in r["drop_reasons"].items():
            drops[k] = drops.get(k, 0) + v
    rtts = array("f")
    for r in results:
        part = array("f")
        part.frombytes(r["ping_rtts_ms"])
        rtts.extend(part)
    connect_seconds = max(i["connect_seconds"] for i in infos)
    per_conn = None
    if before is not None and after_hold is not None and held:
        per_conn = round((max(after_hold, after_connect or 0) - before) / held, 2)
    return {
        "requested": count,
        "opened": opened,
        "held": held,
        "failures": failures,
        "dropped": drops,
        "pings": sum(r["pings"] for r in results),
        "ping_rtt_ms": summarize(rtts),
        "connect_seconds": connect_seconds,
        "connects_per_s": round(opened / connect_seconds, 1) if connect_seconds else None,
        "rss_before_kib": before,
        "rss_connected_kib": after_connect,
        "rss_after_hold_kib": after_hold,
        "rss_per_connection_kib": per_conn,
        "source_addresses": local_ips or ["127.0.0.1"],
        "processes": len(specs),
    }


def scenario_connections(ctx: Context) -> ScenarioResult:
    opts = ctx.opts
    count = opts.connections
    res = ScenarioResult("connections")
    connector_id, address = _connector_for(ctx)
    pid = ctx.target.connector_pid(connector_id) or ctx.target.pids.get("connector")
    auth_mode = opts.connections_auth
    if auth_mode == "mint" and ctx.target.private_key is None:
        auth_mode = "login"
    if auth_mode == "mint":
        key = ctx.target.private_key.decode()  # type: ignore[union-attr]
        base = 10_000_000 + int(uuid.uuid4().int % 1_000_000) * 1000

        def auth_for(idx: list[int]) -> dict[str, Any]:
            return {
                "kind": "mint",
                "private_key": key,
                "issuer": ctx.target.issuer,
                "ttl": 3600,
                "address": address,
                "devices": [(base + i, "bench-conn") for i in idx],
            }

        how = "tokens minted with the suite's signing key for synthetic user ids, one device each"
    else:
        n_users = min(count, 50)
        names = user_names(ctx, "cl", n_users)
        ctx.log(f"  [connections] registering {n_users} users for real logins")
        run_sync(register(ctx.target.gateway, names))

        def auth_for(idx: list[int]) -> dict[str, Any]:
            return {
                "kind": "login",
                "gateway": ctx.target.gateway,
                "password": PASSWORD,
                "devices": [(names[i % n_users], f"bench-conn-{i}") for i in idx],
            }

        how = "tokens from real logins (argon2 per connection)"
    suite = _hold(ctx, count, auth_for, pid, f"connector {connector_id}")
    suite["connector"] = connector_id
    suite["connector_pid"] = pid
    suite["auth"] = how
    relay = None
    if ctx.relay is not None:
        relay_address = ctx.relay.address

        def relay_auth(idx: list[int]) -> dict[str, Any]:
            return {"kind": "relay", "address": relay_address, "user_ids": [i + 1 for i in idx]}

        relay = _hold(ctx, count, relay_auth, ctx.relay.pid, "relay")
    res.data = {"suite": suite, "relay": relay, "heartbeat_s": opts.heartbeat, "hold_s": opts.hold}
    rows = []
    for name, r in (("suite", suite), ("relay", relay)):
        if r is None:
            continue
        rows.append(
            [
                name,
                r["requested"],
                r["opened"],
                r["held"],
                sum(r["failures"].values()) + sum(r["dropped"].values()),
                r["connects_per_s"],
                r["pings"],
                r["ping_rtt_ms"]["p99"],
                _kib(r["rss_before_kib"]),
                _kib(r["rss_after_hold_kib"]),
                r["rss_per_connection_kib"],
            ]
        )
    table = Table(
        f"connections: {count} to one connector ({connector_id}), heartbeat every "
        f"{opts.heartbeat:g} s, held {opts.hold:g} s",
        [
            "server",
            "asked",
            "opened",
            "held",
            "failed",
            "conn/s",
            "pings",
            "ping p99 ms",
            "RSS before",
            "RSS after",
            "KiB/conn",
        ],
        rows,
    )
    table.notes.append(f"auth: {how}")
    if ctx.target.mode == "standalone":
        table.notes.append(
            "standalone: the connector shares its process with the other four services; the "
            "RSS baseline is taken before connecting, so KiB/conn is the growth per connection"
        )
    if suite["failures"]:
        table.notes.append(f"failures: {suite['failures']}")
    if pid is None:
        table.notes.append("connector pid unknown (pass --connector-pid): no RSS")
    res.tables.append(table)
    return res


def _kib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f} MiB"
