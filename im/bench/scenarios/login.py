"""Scenario ``login``: logins through the gateway against argon2id alone, and token
verifications per second."""

from __future__ import annotations

import math
import os
import time
from array import array
from typing import Any

from im.bench.limits import system_busy_seconds
from im.bench.procs import run_pool
from im.bench.scenarios.common import (
    PASSWORD,
    Context,
    ScenarioResult,
    Table,
    percent,
    register,
    run_sync,
    settle,
    user_names,
)
from im.bench.stats import ratio, summarize


def _timed_pool(kind: str, specs: list[dict[str, Any]], run_timeout: float) -> tuple[Any, float]:
    """run_pool, plus the cores the whole machine was busy meanwhile (ours included)."""
    busy0, t0 = system_busy_seconds(), time.monotonic()
    _, results = run_pool(kind, specs, run_timeout=run_timeout)
    busy1, elapsed = system_busy_seconds(), time.monotonic() - t0
    cores = None if busy0 is None or busy1 is None else round((busy1 - busy0) / elapsed, 2)
    return results, cores


def scenario_login(ctx: Context) -> ScenarioResult:
    opts = ctx.opts
    res = ScenarioResult("login")
    names = user_names(ctx, "l", opts.login_users)
    ctx.log(f"  [login] registering {len(names)} users")
    run_sync(register(ctx.target.gateway, names))
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
                    percent(ratio(login_rate, argon2_rate)),
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
