"""The direct scenario's runs at the suite's own max: rates, summary fields, lines."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from im.bench.scenarios import direct
from im.bench.scenarios.common import Context
from im.bench.scenarios.messaging import Plan


def fake_run(rate: float, **over: Any) -> dict[str, Any]:
    run = {
        "mode": "open",
        "rate_target": round(rate, 1),
        "sent": 0,
        "acked": 0,
        "refused": 0,
        "lost": 0,
        "latency_ms": {"p99": None},
    }
    run.update(over)
    return run


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """run_messaging replaced: records how it was called, returns a fake run."""
    seen: list[dict[str, Any]] = []

    def run_messaging(ctx: Context, plan: Plan, **kw: Any) -> dict[str, Any]:
        seen.append(kw)
        if kw["rate"] > 1000:  # the overload run: some refused, some lost
            return fake_run(
                kw["rate"], sent=4500, acked=4000, refused=500, lost=7, latency_ms={"p99": 950.0}
            )
        return fake_run(kw["rate"], sent=1500, acked=1500, latency_ms={"p99": 4.5})

    monkeypatch.setattr(direct, "run_messaging", run_messaging)
    return seen


def context(**opts: Any) -> Context:
    base = {"duration": 3.0, "no_half_max": False, "no_overload": False, "overload_factor": 1.5}
    return Context(
        opts=SimpleNamespace(**{**base, **opts}),
        target=None,  # type: ignore[arg-type]
        relay=None,
        run_id="t",
        procs=1,
        log=lambda _: None,
    )


PAIR = Plan(
    members=[],
    senders=[{"gid": 0, "conv": "d:1:2"}, {"gid": 1, "conv": "d:1:2"}],
    receivers={"d:1:2": [0, 1]},
    groups=[[0, 1]],
)


def test_half_max_and_overload_runs_at_the_suites_own_max(calls: list[dict[str, Any]]) -> None:
    runs, summary = direct.runs_at_suite_max(context(), PAIR, 1000.0)
    assert list(runs) == ["suite-half-max", "suite-overload"]
    assert [(c["mode"], c["rate"], c["duration"]) for c in calls] == [
        ("open", 500.0, 3.0),
        ("open", 1500.0, 3.0),
    ]
    assert summary == {
        "open_half_max_rate": 500.0,
        "open_half_max_p99_ms": 4.5,
        "overload_factor": 1.5,
        "overload_rate": 1500.0,
        "overload_sent": 4500,
        "overload_acked": 4000,
        "overload_p99_ms": 950.0,
        "overload_refused": 500,
        "overload_undelivered": 7,
    }


def test_runs_can_be_turned_off_and_need_a_max(calls: list[dict[str, Any]]) -> None:
    runs, summary = direct.runs_at_suite_max(context(no_overload=True), PAIR, 1000.0)
    assert list(runs) == ["suite-half-max"] and summary["overload_refused"] is None
    runs, _ = direct.runs_at_suite_max(context(no_half_max=True, overload_factor=2), PAIR, 900.0)
    assert list(runs) == ["suite-overload"] and calls[-1]["rate"] == 1800.0
    calls.clear()
    for max_, duration in ((None, 3.0), (0.0, 3.0), (1000.0, 0.0)):  # no burst, or no open loop
        runs, summary = direct.runs_at_suite_max(context(duration=duration), PAIR, max_)
        assert runs == {} and summary["open_half_max_p99_ms"] is None
    assert calls == []


def test_summary_lines_under_the_table() -> None:
    summary = direct.suite_max_summary(
        {
            "suite-half-max": fake_run(500.0, latency_ms={"p99": 4.5}),
            "suite-overload": fake_run(
                1500.0, sent=4500, acked=4000, refused=500, lost=7, latency_ms={"p99": 950.0}
            ),
        },
        1.5,
    )
    summary["idle_cpu_pct"] = 1.25
    assert direct.suite_max_notes(summary) == [
        "half the suite's max, open loop at 500 msg/s: suite p99 4.5 ms",
        "overload, open loop at 1.5 x the suite's max (1500 msg/s): p99 950.0 ms (accepted "
        "messages), refused BUSY 500 of 4500 sent, undelivered 7 of 4000 acked",
        "suite idle before the load: 1.25% of one core (all its processes)",
    ]
    assert direct.suite_max_notes(direct.suite_max_summary({}, 1.5)) == []
