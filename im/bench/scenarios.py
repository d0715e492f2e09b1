"""The four benchmark scenarios: connections, direct, group, login.

Each takes a ``Context`` (options, the target suite, the relay) and returns a
``ScenarioResult``: tables for stdout, data for the JSON file, latency series for
the chart. The runner calls them in order on one suite.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from array import array
from dataclasses import dataclass, field
from typing import Any

import httpx

from im.bench.limits import (
    cpu_seconds,
    ephemeral_ports,
    rss_kib,
    system_busy_seconds,
    wait_idle,
)
from im.bench.loadgen import bits
from im.bench.procs import BenchError, WorkerPool, run_pool
from im.bench.relay import relay_token
from im.bench.stats import count_in_window, ratio, series, summarize, unpack_samples
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


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _register(gateway: str, names: list[str], concurrency: int = 8) -> list[int]:
    from im.client import GatewayClient

    sem = asyncio.Semaphore(concurrency)
    ids: list[int] = [0] * len(names)

    async def one(i: int) -> None:
        async with sem, GatewayClient(gateway, timeout=60) as gw:
            ids[i] = int((await gw.register(names[i], PASSWORD))["user_id"])

    await asyncio.gather(*(one(i) for i in range(len(names))))
    return ids


async def _login(gateway: str, names: list[str], device: str, concurrency: int = 8) -> list[Any]:
    from im.client import GatewayClient

    sem = asyncio.Semaphore(concurrency)
    out: list[Any] = [None] * len(names)

    async def one(i: int) -> None:
        async with sem, GatewayClient(gateway, timeout=60) as gw:
            out[i] = await gw.login(names[i], PASSWORD, device)

    await asyncio.gather(*(one(i) for i in range(len(names))))
    return out


def _names(ctx: Context, scenario: str, count: int) -> list[str]:
    return [f"b{ctx.run_id}_{scenario}_{i}" for i in range(count)]


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    parts = max(1, min(parts, len(items))) if items else 1
    return [items[i::parts] for i in range(parts)]


def settle(ctx: Context) -> None:
    """Let the servers finish what a previous phase queued before measuring again."""
    pids = list(ctx.target.pids.values())
    if ctx.relay is not None:
        pids.append(ctx.relay.pid)
    if pids:
        wait_idle(pids)


def _pc(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


# ------------------------------------------------------------------ messaging runs


@dataclass
class Plan:
    """Who is connected where and who sends to which conversation."""

    members: list[dict[str, Any]]  # gid, token, address
    senders: list[dict[str, Any]]  # gid, conv
    receivers: dict[str, list[int]]  # conv -> connected member gids
    groups: list[list[int]]  # gids per worker process
    server_pids: list[int] = field(default_factory=list)  # for the CPU they use


def run_messaging(
    ctx: Context,
    plan: Plan,
    *,
    mode: str,
    duration: float,
    rate: float = 0.0,
    window: int = 8,
) -> dict[str, Any]:
    opts = ctx.opts
    settle(ctx)
    by_gid = {m["gid"]: m for m in plan.members}
    senders_of = {s["gid"]: s for s in plan.senders}
    total_senders = max(1, len(plan.senders))
    specs = []
    for gids in plan.groups:
        mine = [senders_of[g] for g in gids if g in senders_of]
        specs.append(
            {
                "mode": mode,
                "members": [by_gid[g] for g in gids],
                "senders": mine,
                "rate": rate * len(mine) / total_senders,
                "window": window,
                "duration": duration,
                "grace": opts.grace,
                "body_size": opts.body_size,
                "late_ms": opts.late_ms,
                "heartbeat": None,
            }
        )
    with WorkerPool("messaging", specs) as pool:
        infos = pool.ready(120)
        cpu0, busy0 = _cpu(plan.server_pids), system_busy_seconds()
        gen0 = _cpu(pool.pids)
        t0 = time.monotonic()
        pool.go()
        results = pool.results(duration + opts.grace + 60)
        elapsed = time.monotonic() - t0
        cpu1, busy1 = _cpu(plan.server_pids), system_busy_seconds()
        gen1 = _cpu(pool.pids)
    out = aggregate(plan, infos, results, duration, mode=mode, rate=rate, window=window)
    server = (cpu1 - cpu0) / elapsed
    generator = (gen1 - gen0) / elapsed
    out["server_cores"] = round(server, 2) if plan.server_pids else None
    out["generator_cores"] = round(generator, 2)
    if busy0 is not None and busy1 is not None:
        # everything else on the machine: backing servers, other people's work
        out["other_cores"] = round(max(0.0, (busy1 - busy0) / elapsed - server - generator), 2)
    return out


def _timed_pool(kind: str, specs: list[dict[str, Any]], run_timeout: float) -> tuple[Any, float]:
    """run_pool, plus the cores the whole machine was busy meanwhile (ours included)."""
    busy0, t0 = system_busy_seconds(), time.monotonic()
    _, results = run_pool(kind, specs, run_timeout=run_timeout)
    busy1, elapsed = system_busy_seconds(), time.monotonic() - t0
    cores = None if busy0 is None or busy1 is None else round((busy1 - busy0) / elapsed, 2)
    return results, cores


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) or 0.0 for p in pids)


def aggregate(
    plan: Plan,
    infos: list[dict[str, Any]],
    results: list[dict[str, Any]],
    duration: float,
    *,
    mode: str,
    rate: float,
    window: int,
) -> dict[str, Any]:
    conv_of = {s["gid"]: s["conv"] for s in plan.senders}
    acked: dict[int, int] = {}
    received: dict[int, dict[int, int]] = {}
    arrivals, latencies, ack_lat = array("f"), array("f"), array("f")
    errors: dict[str, int] = {}
    closed: dict[str, int] = {}
    connect_failures: dict[str, int] = {}
    for info in infos:
        for k, v in info.get("connect_failures", {}).items():
            connect_failures[k] = connect_failures.get(k, 0) + v
    sent = late = echo = peer = app_dups = wire_dups = retransmits = 0
    max_lag = 0.0
    cpu = 0.0
    send_seconds = max((r["send_seconds"] for r in results), default=duration) or duration
    for r in results:
        sent += r["sent"]
        late += r["late"]
        echo += r["echo"]
        peer += r["peer_deliveries"]
        app_dups += r["app_dups"]
        wire_dups += r["wire_dups"]
        retransmits += r["retransmits"]
        cpu += r["cpu_seconds"]
        max_lag = max(max_lag, r["max_lag_ms"])
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
        for k, v in r["closed_early"].items():
            closed[k] = closed.get(k, 0) + v
        for gid, data in r["acked"].items():
            acked[gid] = bits(data)
        for gid, by in r["received"].items():
            received[gid] = {s: bits(d) for s, d in by.items()}
        a, lat = unpack_samples(r["samples"])
        arrivals.extend(a)
        latencies.extend(lat)
        ack_part = array("f")
        ack_part.frombytes(r["ack_latencies"])
        ack_lat.extend(ack_part)
    acked_count = sum(v.bit_count() for v in acked.values())
    connected = {g for info in infos for g in info.get("connected_gids", [])}
    expected = matched = 0
    for sender, acked_bits in acked.items():
        if not acked_bits:
            continue
        count = acked_bits.bit_count()
        for receiver in plan.receivers.get(conv_of[sender], []):
            if receiver == sender or receiver not in connected:
                continue
            expected += count
            got = received.get(receiver, {}).get(sender, 0)
            matched += (acked_bits & got).bit_count()
    window_s = send_seconds or duration
    in_window = count_in_window(arrivals, 0.0, window_s)
    return {
        "mode": mode,
        "rate_target": round(rate, 1) if mode == "open" else None,
        "window": window if mode == "burst" else None,
        "duration": round(window_s, 3),
        "connections": sum(i.get("connected", 0) for i in infos),
        "connect_failures": connect_failures,
        "scheduled": int(rate * duration) if mode == "open" else None,
        "sent": sent,
        "acked": acked_count,
        "send_errors": errors,
        "late": late,
        "max_lag_ms": max_lag,
        "expected": expected,
        "delivered": peer,
        "lost": expected - matched,
        "echo": echo,
        "dup_wire": wire_dups,
        "dup_app": app_dups,
        "retransmits": retransmits,
        "closed_early": closed,
        "send_rate": round(sent / window_s, 1) if window_s else None,
        "throughput": round(in_window / window_s, 1) if window_s else None,
        "latency_ms": summarize(latencies),
        "ack_latency_ms": summarize(ack_lat),
        "series": series(arrivals, latencies, 1.0),
        "generator_cpu_s": round(cpu, 2),
    }


def _messaging_rows(label: str, runs: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for name, r in runs.items():
        lat = r["latency_ms"]
        rows.append(
            [
                f"{label}:{name}",
                r["mode"]
                + (f" {r['rate_target']:.0f}/s" if r["mode"] == "open" else f" w={r['window']}"),
                r["scheduled"] if r["scheduled"] is not None else "-",
                r["sent"],
                r["acked"],
                r["delivered"],
                r["lost"],
                r["dup_wire"],
                r["late"],
                round(r["throughput"] or 0),
                lat["p50"],
                lat["p90"],
                lat["p99"],
                lat["max"],
                r.get("server_cores"),
                r.get("generator_cores"),
                r.get("other_cores"),
            ]
        )
    return rows


MESSAGING_HEADERS = [
    "run",
    "load",
    "scheduled",
    "sent",
    "acked",
    "delivered",
    "lost",
    "dup",
    "late",
    "deliv/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "srv cores",
    "gen cores",
    "other cores",
]


def compare_with_relay(
    ctx: Context,
    name: str,
    suite_plan: Plan,
    relay_plan: Plan | None,
    *,
    burst: float,
    duration: float,
    window: int,
    rate: float | None,
    fraction: float,
    unit: str,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Burst (closed loop) on relay then suite for the max rates, then open loop on
    both at ``rate`` (default: ``fraction`` of the relay's max)."""
    runs: dict[str, dict[str, Any]] = {}
    log = ctx.log
    if relay_plan is not None and burst > 0:
        log(f"  [{name}] relay burst {burst:.0f} s (closed loop, window {window})")
        runs["relay-burst"] = run_messaging(
            ctx, relay_plan, mode="burst", duration=burst, window=window
        )
    if burst > 0:
        log(f"  [{name}] suite burst {burst:.0f} s (closed loop, window {window})")
        runs["suite-burst"] = run_messaging(
            ctx, suite_plan, mode="burst", duration=burst, window=window
        )
    receivers_per_msg = _receivers_per_message(suite_plan)
    relay_max = runs.get("relay-burst", {}).get("throughput")
    suite_max = runs.get("suite-burst", {}).get("throughput")
    if rate is None:
        base = relay_max or suite_max
        if not base:
            raise BenchError(f"{name}: no max rate measured; pass the open-loop rate explicitly")
        rate = max(1.0, base * fraction / receivers_per_msg)  # deliveries/s -> messages/s
    if duration > 0:
        if relay_plan is not None:
            log(f"  [{name}] relay open loop {rate:.0f} msg/s for {duration:.0f} s")
            runs["relay-open"] = run_messaging(
                ctx, relay_plan, mode="open", duration=duration, rate=rate
            )
        log(f"  [{name}] suite open loop {rate:.0f} msg/s for {duration:.0f} s")
        runs["suite-open"] = run_messaging(
            ctx, suite_plan, mode="open", duration=duration, rate=rate
        )
    summary = {
        "unit": unit,
        "relay_max": relay_max,
        "suite_max": suite_max,
        "max_ratio": ratio(suite_max, relay_max),
        "open_rate_msgs": round(rate, 1),
        "open_rate_deliveries": round(rate * receivers_per_msg, 1),
        "open_ratio": ratio(
            runs.get("suite-open", {}).get("throughput"),
            runs.get("relay-open", {}).get("throughput"),
        ),
        "open_p99_ms": runs.get("suite-open", {}).get("latency_ms", {}).get("p99"),
    }
    return runs, summary


def _receivers_per_message(plan: Plan) -> float:
    counts = [max(0, len(plan.receivers.get(s["conv"], [])) - 1) for s in plan.senders]
    return (sum(counts) / len(counts)) if counts else 1.0


def _warm_up(plan: Plan) -> None:
    """One message per sender, so conversations exist and caches are warm."""
    from im.client import Connection

    by_gid = {m["gid"]: m for m in plan.members}

    async def one(sender: dict[str, Any]) -> None:
        m = by_gid[sender["gid"]]
        conn = await Connection.open(m["address"], m["token"])
        try:
            await conn.send(sender["conv"], b"warm-up", "text/plain", ack_timeout=10)
        finally:
            await conn.close()

    async def all_() -> None:
        sem = asyncio.Semaphore(16)

        async def guarded(s: dict[str, Any]) -> None:
            async with sem:
                await one(s)

        await asyncio.gather(*(guarded(s) for s in plan.senders))

    _run(all_())


# ------------------------------------------------------------------ direct


def scenario_direct(ctx: Context) -> ScenarioResult:
    from im.ids import direct_conversation_id

    opts = ctx.opts
    pairs = opts.pairs
    res = ScenarioResult("direct")
    names = _names(ctx, "d", 2 * pairs)
    ctx.log(f"  [direct] registering and logging in {len(names)} users")
    user_ids = _run(_register(ctx.target.gateway, names))
    logins = _run(_login(ctx.target.gateway, names, "bench-direct"))
    members, senders, receivers = [], [], {}
    r_members, r_senders, r_receivers = [], [], {}
    for p in range(pairs):
        a, b = 2 * p, 2 * p + 1
        conv = direct_conversation_id(user_ids[a], user_ids[b])
        rconv = f"d:{a + 1}:{b + 1}"
        receivers[conv] = [a, b]
        r_receivers[rconv] = [a, b]
        for gid in (a, b):
            members.append(
                {
                    "gid": gid,
                    "token": logins[gid].access_token,
                    "address": logins[gid].connector.tcp,
                }
            )
            senders.append({"gid": gid, "conv": conv})
            if ctx.relay is not None:
                r_members.append(
                    {
                        "gid": gid,
                        "token": relay_token(gid + 1, [rconv]),
                        "address": ctx.relay.address,
                    }
                )
                r_senders.append({"gid": gid, "conv": rconv})
    groups = [
        [g for p in part for g in (2 * p, 2 * p + 1)]
        for part in _split(list(range(pairs)), ctx.procs)
    ]
    plan = Plan(members, senders, receivers, groups, list(ctx.target.pids.values()))
    relay_plan = (
        Plan(r_members, r_senders, r_receivers, groups, [ctx.relay.pid]) if ctx.relay else None
    )
    connectors = sorted({lg.connector.id for lg in logins})
    _warm_up(plan)
    runs, summary = compare_with_relay(
        ctx,
        "direct",
        plan,
        relay_plan,
        burst=opts.burst_seconds,
        duration=opts.duration,
        window=opts.window,
        rate=opts.rate,
        fraction=opts.rate_fraction,
        unit="deliveries/s",
    )
    res.data = {
        "pairs": pairs,
        "users": 2 * pairs,
        "connectors": connectors,
        "runs": runs,
        "summary": summary,
    }
    for name, r in runs.items():
        res.series[f"direct {name}"] = r["series"]
    table = Table(
        f"direct: {pairs} pairs ({2 * pairs} users) on {len(connectors)} connector(s)",
        MESSAGING_HEADERS,
        _messaging_rows("direct", runs),
    )
    table.notes.append(
        f"max (closed-loop burst): relay {summary['relay_max']} /s, suite {summary['suite_max']} /s"
        f" -> suite/relay {_pc(summary['max_ratio'])}"
    )
    if "suite-open" in runs:
        table.notes.append(
            f"open loop at {summary['open_rate_msgs']:.0f} msg/s: suite/relay throughput "
            f"{_pc(summary['open_ratio'])}, suite p99 {summary['open_p99_ms']} ms"
        )
    res.tables.append(table)
    return res


# ------------------------------------------------------------------ group


def _create_group(gateway: str, token: str, name: str, member_ids: list[int]) -> str:
    """POST /v1/groups, then /members in chunks; the conversation id ("g:<id>")."""
    headers = {"authorization": f"Bearer {token}"}
    chunk = 500
    with httpx.Client(base_url=gateway, timeout=60, headers=headers) as http:
        reply = http.post("/v1/groups", json={"name": name, "member_ids": member_ids[:chunk]})
        if reply.status_code in (404, 405):
            raise Skip(
                f"POST /v1/groups answered {reply.status_code}: the group API is not "
                "in this suite yet"
            )
        if reply.status_code >= 400:
            raise BenchError(f"POST /v1/groups: {reply.status_code} {reply.text[:300]}")
        data = reply.json()
        conv = data.get("conversation_id")
        gid = data.get("group_id") or data.get("id")
        if not conv:
            if gid is None:
                raise BenchError(f"POST /v1/groups: no group id in {data}")
            conv = f"g:{gid}"
        if gid is None:
            gid = conv.split(":", 1)[1]
        for i in range(chunk, len(member_ids), chunk):
            more = http.post(
                f"/v1/groups/{gid}/members", json={"user_ids": member_ids[i : i + chunk]}
            )
            if more.status_code >= 400:
                raise BenchError(
                    f"POST /v1/groups/{gid}/members: {more.status_code} {more.text[:300]}"
                )
    return str(conv)


def scenario_group(ctx: Context) -> ScenarioResult:
    opts = ctx.opts
    size, connected = opts.group_members, min(opts.group_connected, opts.group_members)
    nsenders = max(1, min(opts.group_senders, connected))
    res = ScenarioResult("group")
    names = _names(ctx, "g", size)
    ctx.log(f"  [group] registering {size} users")
    user_ids = _run(_register(ctx.target.gateway, names))
    (owner,) = _run(_login(ctx.target.gateway, names[:1], "bench-group-owner"))
    conv = _create_group(
        ctx.target.gateway, owner.access_token, f"bench {ctx.run_id}", user_ids[1:]
    )
    ctx.log(f"  [group] {conv}: logging in {connected} members")
    logins = _run(_login(ctx.target.gateway, names[:connected], "bench-group"))
    gids = list(range(connected))
    members = [
        {"gid": g, "token": logins[g].access_token, "address": logins[g].connector.tcp}
        for g in gids
    ]
    senders = [{"gid": g, "conv": conv} for g in gids[:nsenders]]
    groups = _split(gids, ctx.procs)
    plan = Plan(members, senders, {conv: gids}, groups, list(ctx.target.pids.values()))
    relay_plan = None
    if ctx.relay is not None:
        rconv = "g:1"
        relay_plan = Plan(
            [
                {"gid": g, "token": relay_token(g + 1, [rconv]), "address": ctx.relay.address}
                for g in gids
            ],
            [{"gid": g, "conv": rconv} for g in gids[:nsenders]],
            {rconv: gids},
            groups,
            [ctx.relay.pid],
        )
    _warm_up(Plan(members, senders[:1], {conv: gids}, groups))
    runs, summary = compare_with_relay(
        ctx,
        "group",
        plan,
        relay_plan,
        burst=opts.burst_seconds,
        duration=opts.group_duration,
        window=opts.window,
        rate=opts.group_rate,
        fraction=opts.rate_fraction,
        unit="deliveries/s",
    )
    connectors = sorted({lg.connector.id for lg in logins})
    res.data = {
        "members": size,
        "connected": connected,
        "senders": nsenders,
        "conversation": conv,
        "connectors": connectors,
        "runs": runs,
        "summary": summary,
    }
    for name, r in runs.items():
        res.series[f"group {name}"] = r["series"]
    table = Table(
        f"group: {size} members, {connected} connected, {nsenders} senders "
        f"({connected - 1} deliveries per message, the sender's own copy not counted)",
        MESSAGING_HEADERS,
        _messaging_rows("group", runs),
    )
    table.notes.append(
        f"max deliveries/s (closed-loop burst): relay {summary['relay_max']}, suite "
        f"{summary['suite_max']} -> suite/relay {_pc(summary['max_ratio'])}"
    )
    res.tables.append(table)
    return res


# ------------------------------------------------------------------ login


def scenario_login(ctx: Context) -> ScenarioResult:
    opts = ctx.opts
    res = ScenarioResult("login")
    names = _names(ctx, "l", opts.login_users)
    ctx.log(f"  [login] registering {len(names)} users")
    _run(_register(ctx.target.gateway, names))
    a2 = ctx.target.argon2
    threads = os.cpu_count() or 2
    settle(ctx)
    ctx.log(f"  [login] argon2id alone ({a2}) on {threads} threads for {opts.verify_seconds:.0f} s")
    (alone,), busy_alone = _timed_pool(
        "argon2",
        [{**a2, "threads": threads, "duration": opts.verify_seconds}],
        opts.verify_seconds + 60,
    )
    argon2_rate = alone["count"] / alone["seconds"]
    ctx.log(f"  [login] logins through the gateway for {opts.login_seconds:.0f} s")
    per_proc = max(1, math.ceil(opts.login_concurrency / ctx.procs))
    specs = [
        {
            "gateway": ctx.target.gateway,
            "users": names,
            "password": PASSWORD,
            "concurrency": per_proc,
            "duration": opts.login_seconds,
        }
        for _ in range(ctx.procs)
    ]
    results, busy_login = _timed_pool("login", specs, opts.login_seconds + 120)
    ok = sum(r["ok"] for r in results)
    seconds = max(r["seconds"] for r in results)
    failures: dict[str, int] = {}
    lat = array("f")
    for r in results:
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
        part = array("f")
        part.frombytes(r["latencies"])
        lat.extend(part)
    login_rate = ok / seconds if seconds else 0.0
    settle(ctx)  # the user service may still be hashing abandoned requests
    ctx.log(
        f"  [login] token verifications for {opts.verify_seconds:.0f} s "
        f"(1 process, then {ctx.procs})"
    )
    (single,), busy_one = _timed_pool(
        "verify_tokens", [{"duration": opts.verify_seconds}], opts.verify_seconds + 60
    )
    multi, busy_all = _timed_pool(
        "verify_tokens", [{"duration": opts.verify_seconds}] * ctx.procs, opts.verify_seconds + 60
    )
    verify_one = single["count"] / single["seconds"]
    verify_all = sum(r["count"] / r["seconds"] for r in multi)
    lat_s = summarize(lat)
    res.data = {
        "argon2": a2,
        "argon2_alone_per_s": round(argon2_rate, 1),
        "argon2_threads": threads,
        "logins": ok,
        "login_failures": failures,
        "login_seconds": seconds,
        "logins_per_s": round(login_rate, 1),
        "login_vs_argon2": ratio(login_rate, argon2_rate),
        "login_latency_ms": lat_s,
        "login_concurrency": per_proc * ctx.procs,
        "token_verify_per_s_1proc": round(verify_one, 1),
        "token_verify_per_s_all": round(verify_all, 1),
        "token_verify_procs": ctx.procs,
        "machine_busy_cores": {
            "argon2_alone": busy_alone,
            "logins": busy_login,
            "verify_1proc": busy_one,
            "verify_all": busy_all,
        },
    }
    res.tables.append(
        Table(
            "login",
            ["measure", "value", "machine busy cores", "note"],
            [
                [
                    "argon2id verify alone /s",
                    f"{argon2_rate:.1f}",
                    busy_alone,
                    f"t={a2['time_cost']} m={a2['memory_kib']}KiB p={a2['parallelism']}, "
                    f"{threads} threads, suite idle",
                ],
                [
                    "logins /s (gateway)",
                    f"{login_rate:.1f}",
                    busy_login,
                    f"{ok} ok, failures {failures or 0}, concurrency {per_proc * ctx.procs}",
                ],
                [
                    "logins / argon2 alone",
                    _pc(ratio(login_rate, argon2_rate)),
                    None,
                    "target >= 90%",
                ],
                ["login latency p50/p99 ms", f"{lat_s['p50']} / {lat_s['p99']}", None, ""],
                [
                    "token verifications /s, 1 process",
                    f"{verify_one:.0f}",
                    busy_one,
                    "im.auth.TokenVerifier (RS256)",
                ],
                [
                    f"token verifications /s, {ctx.procs} processes",
                    f"{verify_all:.0f}",
                    busy_all,
                    "target >= 20,000",
                ],
            ],
            notes=[
                "machine busy cores: the whole machine during that measure, ours included "
                f"(of {os.cpu_count()}); more than the measure itself needs means other work ran"
            ],
        )
    )
    return res


# ------------------------------------------------------------------ connections


def _connector_for(ctx: Context) -> tuple[str, str]:
    """(connector id, tcp address) of one connector, from a real login."""
    names = _names(ctx, "c", 1)
    _run(_register(ctx.target.gateway, names))
    (lg,) = _run(_login(ctx.target.gateway, names, "bench-conn-probe"))
    return lg.connector.id, lg.connector.tcp


def _hold(ctx: Context, count: int, auth_for: Any, pid: int | None, label: str) -> dict[str, Any]:
    opts = ctx.opts
    per = _split(list(range(count)), ctx.procs)
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
        names = _names(ctx, "cl", n_users)
        ctx.log(f"  [connections] registering {n_users} users for real logins")
        _run(_register(ctx.target.gateway, names))

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


SCENARIOS = {
    "connections": scenario_connections,
    "direct": scenario_direct,
    "group": scenario_group,
    "login": scenario_login,
}
