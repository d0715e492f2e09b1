"""The idle measure of the servers before any load, from fake CPU readings."""

from __future__ import annotations

from typing import Any

from im.bench.limits import CpuWindow
from im.bench.runner import idle_line, measure_idle


def fake_window(readings: dict[int, tuple[float, float]], seconds: float = 5.0) -> Any:
    """A cpu_window stand-in: (before, after) CPU seconds per pid, over ``seconds``."""
    asked: list[tuple[list[int], float]] = []

    def window(pids: Any, start: float, end: float) -> CpuWindow:
        asked.append((list(pids), end - start))
        return CpuWindow(
            start,
            start + seconds,
            {p: readings[p][0] for p in pids},
            {p: readings[p][1] for p in pids},
        )

    window.asked = asked  # type: ignore[attr-defined]
    return window


def test_idle_of_a_distributed_suite_adds_every_process_and_keeps_the_relay_apart() -> None:
    window = fake_window({1: (10.0, 10.05), 2: (3.0, 3.0), 3: (7.0, 7.1), 9: (1.0, 1.0)})
    settled: list[list[int]] = []
    idle = measure_idle(
        {"gateway": 1, "user": 2, "router-1": 3},
        9,
        5.0,
        window=window,
        settle=lambda pids, **kw: settled.append(pids) or 0.0,
    )
    assert settled == [[1, 2, 3, 9]]  # quiet first, then measured
    assert window.asked == [([1, 2, 3, 9], 5.0)]
    assert idle == {
        "seconds": 5.0,
        "suite_cpu_pct": 3.0,  # 0.15 CPU seconds in 5 s
        "processes": {"gateway": 1.0, "user": 0.0, "router-1": 2.0},
        "relay_cpu_pct": 0.0,
    }
    assert idle_line(idle) == (
        "idle for 5 s: suite 3% of one core (gateway 1%, user 0%, router-1 2%); relay 0%"
    )


def test_idle_of_a_standalone_suite_without_relay() -> None:
    idle = measure_idle(
        {"suite": 5},
        None,
        5.0,
        window=fake_window({5: (2.0, 2.06)}),
        settle=lambda pids, **kw: 0.0,
    )
    assert idle is not None and idle["suite_cpu_pct"] == 1.2 and idle["relay_cpu_pct"] is None
    assert idle_line(idle) == "idle for 5 s: suite 1.2% of one core"
    assert measure_idle({}, None, 5.0, settle=lambda pids, **kw: 0.0) is None  # no pid known
