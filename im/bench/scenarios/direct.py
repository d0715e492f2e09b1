"""Scenario ``direct``: 1:1 conversations between user pairs, beside the relay."""

from __future__ import annotations

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
    warm_up,
)


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
    res.tables.append(table)
    return res
