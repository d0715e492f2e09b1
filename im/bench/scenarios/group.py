"""Scenario ``group``: fan-out to the connected members of one group, beside the relay."""

from __future__ import annotations

import httpx

from im.bench.procs import BenchError
from im.bench.relay import relay_token
from im.bench.scenarios.common import (
    Context,
    ScenarioResult,
    Skip,
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
    names = user_names(ctx, "g", size)
    ctx.log(f"  [group] registering {size} users")
    user_ids = run_sync(register(ctx.target.gateway, names))
    (owner,) = run_sync(login(ctx.target.gateway, names[:1], "bench-group-owner"))
    conv = _create_group(
        ctx.target.gateway, owner.access_token, f"bench {ctx.run_id}", user_ids[1:]
    )
    ctx.log(f"  [group] {conv}: logging in {connected} members")
    logins = run_sync(login(ctx.target.gateway, names[:connected], "bench-group"))
    gids = list(range(connected))
    members = [
        {"gid": g, "token": logins[g].access_token, "address": logins[g].connector.tcp}
        for g in gids
    ]
    senders = [{"gid": g, "conv": conv} for g in gids[:nsenders]]
    groups = split(gids, ctx.procs)
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
    warm_up(Plan(members, senders[:1], {conv: gids}, groups))
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
        messaging_rows("group", runs),
    )
    table.notes.append(
        f"max deliveries/s (closed-loop burst): relay {summary['relay_max']}, suite "
        f"{summary['suite_max']} -> suite/relay {percent(summary['max_ratio'])}"
    )
    res.tables.append(table)
    return res
