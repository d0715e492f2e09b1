"""Messaging runs shared by the direct and group scenarios: a plan of who connects
where and sends to what, one run of the load generator on it (closed-loop burst or
open loop), the aggregate of its workers' results, and the table rows."""

from __future__ import annotations

import asyncio
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from im.bench.limits import cpu_readings, cpu_used, cpu_window, system_busy_seconds
from im.bench.loadgen.messaging import bits
from im.bench.procs import BenchError, WorkerPool
from im.bench.scenarios.common import Context, run_sync, settle
from im.bench.stats import (
    count_in_window,
    per_message_us,
    ratio,
    series,
    summarize,
    unpack_samples,
)


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
        gen_pids = pool.pids
        srv0, gen0 = cpu_readings(plan.server_pids), cpu_readings(gen_pids)
        busy0, t0 = system_busy_seconds(), time.monotonic()
        start = pool.go()
        # The steady window is the sending time only: the servers do less per second
        # in the start-up delay before it and in the grace after it (draining).
        steady = cpu_window(plan.server_pids, start, start + duration)
        results = pool.results(duration + opts.grace + 60)
        elapsed = time.monotonic() - t0
        srv1, gen1 = cpu_readings(plan.server_pids), cpu_readings(gen_pids)
        busy1 = system_busy_seconds()
    out = aggregate(
        plan,
        infos,
        results,
        duration,
        mode=mode,
        rate=rate,
        window=window,
        steady=(steady.start - start, steady.end - start),
    )
    server = cpu_used(srv0, srv1) if plan.server_pids else None
    generator = cpu_used(gen0, gen1)
    out["server_cores"] = None if server is None else round(server / elapsed, 2)
    out["generator_cores"] = None if generator is None else round(generator / elapsed, 2)
    out["server_processes"] = len(plan.server_pids)
    out["server_cpu_steady_s"] = None if steady.used is None else round(steady.used, 3)
    out["server_cpu_us_per_msg"] = per_message_us(
        steady.used if plan.server_pids else None, out["steady_deliveries"]
    )
    # servers whose CPU is unknown (no pid given, or one exited) end up in "other"
    ours = None if generator is None else generator + (server or 0.0)
    if busy0 is not None and busy1 is not None and ours is not None:
        # everything else on the machine: backing servers, other people's work
        out["other_cores"] = round(max(0.0, (busy1 - busy0 - ours) / elapsed), 2)
    return out


def aggregate(
    plan: Plan,
    infos: list[dict[str, Any]],
    results: list[dict[str, Any]],
    duration: float,
    *,
    mode: str,
    rate: float,
    window: int,
    steady: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One run's numbers from its workers' infos and results. ``steady`` is the window
    (seconds since the start) the servers' CPU was read over, to count the deliveries
    that arrived within it."""
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
    sent = refused = late = echo = peer = app_dups = wire_dups = retransmits = 0
    max_lag = 0.0
    cpu = 0.0
    send_seconds = max((r["send_seconds"] for r in results), default=duration) or duration
    for r in results:
        sent += r["sent"]
        refused += r["refused"]
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
    steady = steady or (0.0, window_s)
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
        "refused": refused,
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
        # first copies at the other members (no echo, no duplicates) within ``steady``
        "steady_deliveries": count_in_window(arrivals, *steady),
        "steady_seconds": round(steady[1] - steady[0], 3),
        "latency_ms": summarize(latencies),
        "ack_latency_ms": summarize(ack_lat),
        "series": series(arrivals, latencies, 1.0),
        "generator_cpu_s": round(cpu, 2),
    }


def messaging_rows(label: str, runs: dict[str, dict[str, Any]]) -> list[list[Any]]:
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
                r["refused"],
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
                r.get("server_cpu_us_per_msg"),
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
    "refused",
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
    "srv us/msg",
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
    receivers_per_msg = receivers_per_message(suite_plan)
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


def receivers_per_message(plan: Plan) -> float:
    counts = [max(0, len(plan.receivers.get(s["conv"], [])) - 1) for s in plan.senders]
    return (sum(counts) / len(counts)) if counts else 1.0


def warm_up(plan: Plan) -> None:
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

    run_sync(all_())
