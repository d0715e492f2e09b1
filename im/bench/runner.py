"""``imctl bench``: start (or point at) a suite and the bare relay, run the selected
scenarios, print a table per scenario, write JSON and a PNG chart."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from im.bench import report
from im.bench.limits import CpuWindow, cpu_window, raise_nofile, wait_idle
from im.bench.options import SCENARIO_NAMES
from im.bench.procs import BenchError
from im.bench.stats import core_percent

# Longest wait for the servers to go quiet before the idle measure.
IDLE_SETTLE_S = 5.0

METHOD = """\
Method
- Servers and load generator share this machine ({cpus} CPU cores): every number
  below includes the generator's own CPU use. Servers run in their own processes;
  the load generator runs in {procs} separate processes (multiprocessing, one uvloop
  event loop each) using the project's client library (im.client.Connection) over
  real TCP sockets on loopback.
- Baseline: a bare relay (python -m im.bench.relay, its own process) that answers
  Auth/Ping/Send with AuthOk/Pong/SendAck and forwards each Send as a Deliver to every
  connection of the conversation, the sender's included (as the suite does); no auth,
  no storage. Same generator, same sizes, same rates.
- Max rate: closed-loop burst; each sender keeps at most --window messages between
  its send call and its own copy coming back as a Deliver. Throughput = deliveries to
  the other members arriving within the burst / its length. Ratio = suite / relay.
- Open loop: sends are scheduled by the clock at a fixed rate whatever the acks do
  (default: --rate-fraction x the relay's max); a send more than --late-ms behind its
  slot counts as late (the generator fell behind).
- Direct, after the burst: the suite alone, open loop at half its own max (its burst
  throughput) and at --overload-factor x that max (overload). refused = Sends answered
  with Error BUSY (refused at once, nothing stored; counted apart from errors and not
  sent again). The overload p99 is over the deliveries, i.e. accepted messages only;
  undelivered = acknowledged by SendAck but not delivered within --grace s.
- Latency: time.time_ns() taken at the send call travels in the body; measured when
  the Deliver comes out of the receiving Connection (same machine, same clock).
- lost = acknowledged by SendAck but never delivered to a connected member within
  --grace s; dup = Deliver frames the client dropped as already seen (before dedupe).
- srv / gen / other cores: CPU used during the run by the server process(es), by the
  generator processes, and by everything else on the machine (backing servers of the
  distributed mode, other people's work), in cores of {cpus}. Busy "other" cores make
  a run unreliable; many late sends mean it measured the generator as much as the
  server.
- srv us/msg: CPU time (utime + stime from /proc/<pid>/stat, all threads) of the
  server processes (standalone: its one process; distributed: every process of the
  cluster, not the backing servers; relay runs: the relay) from the start to the end of
  sending (the burst or open-loop seconds, not the grace after), divided by the
  deliveries that arrived in that same window: one per message and receiving member
  (the other member of a pair, each connected group member), first copies only; the
  sender's own copy is not counted though the servers send it. A server that falls
  behind (deliveries after the window) spent CPU in it on messages not counted in it:
  its us/msg is then too high (compare steady_deliveries with delivered in the JSON).
  It includes what the servers burn when idle (below), which weighs more at low rates.
- idle: before the first scenario, once the servers have gone quiet (below 10% of a
  core, at most {idle_settle:.0f} s of waiting), the CPU of the same processes over
  --idle-seconds with no client connected, in % of one core.
"""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _selected(args: argparse.Namespace) -> list[str]:
    chosen = list(args.scenarios or SCENARIO_NAMES)
    unknown = [s for s in chosen if s not in SCENARIO_NAMES]
    if unknown:
        raise SystemExit(
            f"imctl bench: unknown scenario(s) {', '.join(unknown)}; "
            f"choose from {', '.join(SCENARIO_NAMES)}"
        )
    return [s for s in SCENARIO_NAMES if s in chosen]


def run(args: argparse.Namespace) -> int:
    from im.bench.scenarios import SCENARIOS, Context, ScenarioResult, Skip
    from im.bench.suites import external, start_distributed, start_relay, start_standalone

    names = _selected(args)
    if args.body_size < 16:
        raise SystemExit("imctl bench: --body-size must be at least 16 (the timestamp header)")
    started = time.time()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id = uuid.uuid4().hex[:6]
    out = Path(args.out)
    run_dir = out / f"{stamp}-{run_id}"
    procs = max(1, args.procs)
    want_fds = int(args.connections * 1.2) + 4096 if "connections" in names else None
    soft, hard = raise_nofile(want_fds)
    mode = (
        "external" if args.bench_gateway else ("distributed" if args.distributed else "standalone")
    )

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    header = [
        f"im bench {stamp} run {run_id}: mode {mode}, scenarios {', '.join(names)}",
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}; RLIMIT_NOFILE {soft}/{hard} (raised by the bench); "
        f"load average at start {load if load is None else round(load, 2)}",
        "",
        METHOD.format(cpus=os.cpu_count(), procs=procs, idle_settle=IDLE_SETTLE_S),
    ]
    print("\n".join(header), flush=True)
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        print(
            f"warning: this machine is already busy (load average {load:.2f} on "
            f"{os.cpu_count()} cores): other work competes with the benchmark",
            flush=True,
        )
    if want_fds and soft < want_fds:
        print(
            f"warning: the open-file limit ({soft}) is below what {args.connections} "
            "connections need and the bench could not raise the hard limit (it needs root "
            "with CAP_SYS_RESOURCE): raise it first (ulimit -Hn, LimitNOFILE=, limits.conf)",
            flush=True,
        )

    target = relay = None
    idle: dict[str, Any] | None = None
    results: list[ScenarioResult] = []
    try:
        _log(f"starting the {mode} suite ...")
        if mode == "standalone":
            target = start_standalone(run_dir)
        elif mode == "distributed":
            target = start_distributed(run_dir, args.connectors, args.routers)
        else:
            target = external(args.bench_gateway, args.connector_pid)
        if not args.no_relay:
            relay = start_relay()
        for note in target.notes:
            print(f"suite: {note}", flush=True)
        if relay is not None:
            print(f"relay: {relay.address} (pid {relay.pid})", flush=True)
        if args.idle_seconds > 0:
            _log(f"measuring the idle servers' CPU for {args.idle_seconds:g} s ...")
            idle = measure_idle(target.pids, relay.pid if relay else None, args.idle_seconds)
            if idle is not None:
                print(idle_line(idle), flush=True)
        print(flush=True)
        ctx = Context(
            opts=args,
            target=target,
            relay=relay,
            run_id=run_id,
            procs=procs,
            log=_log,
            idle_cpu_pct=idle["suite_cpu_pct"] if idle else None,
        )
        for name in names:
            _log(f"scenario {name} ...")
            t0 = time.monotonic()
            try:
                result = SCENARIOS[name](ctx)
            except Skip as exc:
                result = ScenarioResult(name, status="skipped", reason=str(exc))
            except (BenchError, Exception) as exc:
                result = ScenarioResult(name, status="failed", reason=f"{exc}")
                _log(traceback.format_exc())
            result.data["seconds"] = round(time.monotonic() - t0, 1)
            results.append(result)
            _print_result(result)
    finally:
        if relay is not None:
            relay.stop()
        if target is not None:
            _log("stopping the suite ...")
            target.stop()

    data: dict[str, Any] = {
        "run_id": run_id,
        "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
        "mode": mode,
        "machine": {
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "nofile": [soft, hard],
            "load_average_start": load,
            "load_average_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "shared": "load generator and servers share this machine",
        },
        "generator_processes": procs,
        "options": {k: v for k, v in vars(args).items() if k != "func"},
        "suite_notes": target.notes if target else [],
        "idle_cpu_pct": idle["suite_cpu_pct"] if idle else None,
        "idle": idle,
        "scenarios": {r.name: {"status": r.status, "reason": r.reason, **r.data} for r in results},
    }
    json_path = report.write_json(run_dir / "bench.json", data)
    print(f"JSON: {json_path}")
    if not args.no_chart:
        all_series = {k: v for r in results for k, v in r.series.items()}
        png = report.write_chart(
            run_dir / "latency.png", all_series, f"im bench {mode} {stamp} ({run_id})"
        )
        if png is not None:
            print(f"chart: {png}")
        elif all_series:
            print("chart: skipped (matplotlib is not installed: pip install matplotlib)")
    print(f"total {time.time() - started:.0f} s")
    return 1 if any(r.status == "failed" for r in results) else 0


def measure_idle(
    suite_pids: dict[str, int],
    relay_pid: int | None,
    seconds: float,
    *,
    window: Callable[..., CpuWindow] = cpu_window,
    settle: Callable[..., float] = wait_idle,
) -> dict[str, Any] | None:
    """The servers' CPU with no load and no client, in % of one core: the suite's
    processes together and each, and the relay's. None when no pid is known."""
    pids = [*suite_pids.values(), *([relay_pid] if relay_pid else [])]
    if not pids:
        return None
    # start-up work (migrations, consumer groups joining) is not what idle means
    settle(pids, timeout=IDLE_SETTLE_S)
    now = time.time()
    w = window(pids, now, now + seconds)
    suite = w.used_by(suite_pids.values()) if suite_pids else None
    return {
        "seconds": round(w.seconds, 2),
        "suite_cpu_pct": core_percent(suite, w.seconds),
        "processes": {
            name: core_percent(w.used_by([pid]), w.seconds) for name, pid in suite_pids.items()
        },
        "relay_cpu_pct": core_percent(w.used_by([relay_pid]), w.seconds) if relay_pid else None,
    }


def idle_line(idle: dict[str, Any]) -> str:
    each = ", ".join(f"{name} {_pct(v)}" for name, v in idle["processes"].items())
    line = f"idle for {idle['seconds']:g} s: suite {_pct(idle['suite_cpu_pct'])} of one core"
    if len(idle["processes"]) > 1:
        line += f" ({each})"
    if idle["relay_cpu_pct"] is not None:
        line += f"; relay {_pct(idle['relay_cpu_pct'])}"
    return line


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:g}%"


def _print_result(result: Any) -> None:
    if result.status != "ok":
        print(f"{result.name}: {result.status}: {result.reason}\n", flush=True)
        return
    for table in result.tables:
        print(report.format_table(table.title, table.headers, table.rows, table.notes), flush=True)
        print(flush=True)


def main_from_args(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except BenchError as exc:
        print(f"imctl bench: {exc}", file=sys.stderr)
        return 1
