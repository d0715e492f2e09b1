"""Scenario ``direct``: 1:1 conversations between user pairs, beside the relay; then
the suite alone, open loop, at half its own max and beyond it (overload)."""

from __future__ import annotations

from typing import Any

from im.bench.relay import relay_token
from im.bench.scenarios.common import (
    Context,
    ScenarioResult,
    Table,
    login,
    percent,
    register,
    run_sync,
    split,
    user_names,
)
from im.bench.scenarios.messaging import (
    MESSAGING_HEADERS,
    Plan,
    compare_with_relay,
    messaging_rows,
    receivers_per_message,
    run_messaging,
    warm_up,
)

HALF_MAX = 0.5


def scenario_direct(ctx: Context) -> ScenarioResult:
    from im.ids import direct_conversation_id

    opts = ctx.opts
    pairs = opts.pairs
    res = ScenarioResult("direct")
    names = user_names(ctx, "d", 2 * pairs)
    ctx.log(f"  [direct] registering and logging in {len(names)} users")
    user_ids = run_sync(register(ctx.target.gateway, names))
    logins = run_sync(login(ctx.target.gateway, names, "bench-direct"))
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
        for part in split(list(range(pairs)), ctx.procs)
    ]
    plan = Plan(members, senders, receivers, groups, list(ctx.target.pids.values()))
    relay_plan = (
        Plan(r_members, r_senders, r_receivers, groups, [ctx.relay.pid]) if ctx.relay else None
    )
    connectors = sorted({lg.connector.id for lg in logins})
    warm_up(plan)
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
    more, at_max = runs_at_suite_max(ctx, plan, summary["suite_max"])
    runs.update(more)
    summary.update(at_max)
    summary["idle_cpu_pct"] = ctx.idle_cpu_pct
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
        messaging_rows("direct", runs),
    )
    table.notes.append(
        f"max (closed-loop burst): relay {summary['relay_max']} /s, suite {summary['suite_max']} /s"
        f" -> suite/relay {percent(summary['max_ratio'])}"
    )
    if "suite-open" in runs:
        table.notes.append(
            f"open loop at {summary['open_rate_msgs']:.0f} msg/s: suite/relay throughput "
            f"{percent(summary['open_ratio'])}, suite p99 {summary['open_p99_ms']} ms"
        )
    table.notes.extend(suite_max_notes(summary))
    res.tables.append(table)
    return res


def runs_at_suite_max(
    ctx: Context, plan: Plan, suite_max: float | None
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Open loop on the suite at half its own max (the latency it has with room to
    spare) and at --overload-factor times it (what it does with more than it can
    take: refuse with BUSY, or queue and grow the latency). The max is the suite's
    closed-loop burst throughput, so these runs need the burst to have run."""
    opts = ctx.opts
    runs: dict[str, dict[str, Any]] = {}
    half_rate = overload_rate = None
    if suite_max and opts.duration > 0:
        per_message = receivers_per_message(plan)  # deliveries/s -> messages/s
        if not opts.no_half_max:
            half_rate = max(1.0, suite_max * HALF_MAX / per_message)
            ctx.log(f"  [direct] suite open loop at half its max: {half_rate:.0f} msg/s")
            runs["suite-half-max"] = run_messaging(
                ctx, plan, mode="open", duration=opts.duration, rate=half_rate
            )
        if not opts.no_overload:
            overload_rate = max(1.0, suite_max * opts.overload_factor / per_message)
            ctx.log(
                f"  [direct] suite overload at {opts.overload_factor:g} x its max: "
                f"{overload_rate:.0f} msg/s"
            )
            runs["suite-overload"] = run_messaging(
                ctx, plan, mode="open", duration=opts.duration, rate=overload_rate
            )
    return runs, suite_max_summary(runs, opts.overload_factor)


def suite_max_summary(runs: dict[str, dict[str, Any]], overload_factor: float) -> dict[str, Any]:
    """The summary fields of the half-max and overload runs (None where not run)."""
    half = runs.get("suite-half-max")
    over = runs.get("suite-overload")
    return {
        "open_half_max_rate": half["rate_target"] if half else None,
        "open_half_max_p99_ms": half["latency_ms"]["p99"] if half else None,
        "overload_factor": overload_factor,
        "overload_rate": over["rate_target"] if over else None,
        "overload_sent": over["sent"] if over else None,
        "overload_acked": over["acked"] if over else None,
        # p99 of the deliveries, so of accepted messages only: a refused one never arrives
        "overload_p99_ms": over["latency_ms"]["p99"] if over else None,
        "overload_refused": over["refused"] if over else None,
        # acknowledged by SendAck, not delivered to the peer within the grace
        "overload_undelivered": over["lost"] if over else None,
    }


def suite_max_notes(summary: dict[str, Any]) -> list[str]:
    """The lines under the table for the half-max and overload runs and the idle CPU."""
    notes = []
    if summary.get("open_half_max_rate") is not None:
        notes.append(
            f"half the suite's max, open loop at {summary['open_half_max_rate']:.0f} msg/s: "
            f"suite p99 {summary['open_half_max_p99_ms']} ms"
        )
    if summary.get("overload_rate") is not None:
        notes.append(
            f"overload, open loop at {summary['overload_factor']:g} x the suite's max "
            f"({summary['overload_rate']:.0f} msg/s): p99 {summary['overload_p99_ms']} ms "
            f"(accepted messages), refused BUSY {summary['overload_refused']} of "
            f"{summary['overload_sent']} sent, undelivered {summary['overload_undelivered']} "
            f"of {summary['overload_acked']} acked"
        )
    if summary.get("idle_cpu_pct") is not None:
        notes.append(
            f"suite idle before the load: {summary['idle_cpu_pct']:g}% of one core "
            "(all its processes)"
        )
    return notes
