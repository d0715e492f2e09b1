"""A tiny bench run (direct, ~2 s) against a standalone suite started by the bench."""

from __future__ import annotations

import json

import pytest

from im.cli.main import build_parser
from im.cli.servers import cmd_bench

pytestmark = pytest.mark.e2e


def test_bench_arguments_parse() -> None:
    args = build_parser().parse_args(
        ["bench", "direct", "login", "--pairs", "3", "--gateway", "http://127.0.0.1:9"]
    )
    assert args.func is cmd_bench
    assert (args.scenarios, args.pairs, args.bench_gateway) == (
        ["direct", "login"],
        3,
        "http://127.0.0.1:9",
    )
    assert args.connections == 5000 and args.rate is None and not args.distributed


def test_direct_smoke_run(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        [
            "bench",
            "direct",
            "--pairs",
            "2",
            "--duration",
            "2",
            "--burst-seconds",
            "1",
            "--grace",
            "3",
            "--procs",
            "1",
            "--idle-seconds",
            "1",
            "--no-chart",
            "--out",
            str(tmp_path),
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "direct: 2 pairs" in out and "share this machine" in out
    (result,) = tmp_path.glob("*/bench.json")
    data = json.loads(result.read_text())
    direct = data["scenarios"]["direct"]
    assert direct["status"] == "ok", direct
    runs = direct["runs"]
    assert list(runs) == [
        "relay-burst",
        "suite-burst",
        "relay-open",
        "suite-open",
        "suite-half-max",
        "suite-overload",
    ]
    for name, run in runs.items():
        assert run["sent"] > 0 and run["delivered"] > 0, name
        assert run["dup_app"] == 0, (name, run)
        assert run["latency_ms"]["p50"] is not None
        assert run["server_cpu_us_per_msg"] > 0, (name, run)
        if name != "suite-overload":  # beyond its max the suite may refuse or fall behind
            assert run["lost"] == 0 and run["refused"] == 0, (name, run)
    summary = direct["summary"]
    assert summary["max_ratio"] is not None
    assert summary["open_half_max_p99_ms"] is not None and summary["overload_p99_ms"] is not None
    assert summary["overload_refused"] >= 0 and summary["overload_undelivered"] >= 0
    assert summary["idle_cpu_pct"] == data["idle_cpu_pct"] is not None
    assert "overload, open loop at 1.5 x the suite's max" in out
