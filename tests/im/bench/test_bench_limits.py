"""CPU readings from /proc (faked in a folder) and the windows they are taken over."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from im.bench.limits import CpuWindow, cpu_readings, cpu_seconds, cpu_used, cpu_window
from im.bench.stats import core_percent, per_message_us

TCK = os.sysconf("SC_CLK_TCK")


def write_stat(proc: Path, pid: int, utime: int, stime: int, comm: str = "python") -> None:
    """A /proc/<pid>/stat line: utime and stime are fields 14 and 15 (in ticks)."""
    before = ["S", "1", str(pid), str(pid), "0", "-1", "4194560", "100", "0", "0", "0"]
    after = ["7", "3", "20", "0", "4", "0", "12345"]
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    line = f"{pid} ({comm}) " + " ".join([*before, str(utime), str(stime), *after])
    (proc / str(pid) / "stat").write_text(line + "\n")


def test_cpu_seconds_is_utime_plus_stime(tmp_path: Path) -> None:
    write_stat(tmp_path, 42, utime=3 * TCK, stime=TCK // 2)
    # a command name with spaces and a parenthesis does not shift the fields
    write_stat(tmp_path, 43, utime=TCK, stime=TCK, comm="im (suite) x")
    assert cpu_seconds(42, tmp_path) == pytest.approx(3.5)
    assert cpu_seconds(43, tmp_path) == pytest.approx(2.0)
    assert cpu_seconds(44, tmp_path) is None  # no such process


def test_cpu_used_is_unknown_when_a_process_is_missing_at_either_end(tmp_path: Path) -> None:
    write_stat(tmp_path, 1, utime=TCK, stime=0)
    write_stat(tmp_path, 2, utime=0, stime=TCK)
    before = cpu_readings([1, 2], tmp_path)
    write_stat(tmp_path, 1, utime=3 * TCK, stime=0)
    write_stat(tmp_path, 2, utime=0, stime=2 * TCK)
    assert cpu_used(before, cpu_readings([1, 2], tmp_path)) == pytest.approx(3.0)
    (tmp_path / "2" / "stat").unlink()  # process 2 exited: its share is unknown
    assert cpu_used(before, cpu_readings([1, 2], tmp_path)) is None
    assert cpu_used({}, {}) == 0.0


class FakeTime:
    """Wall clock and sleep for cpu_window, with fake processes burning CPU as it moves."""

    def __init__(self, proc: Path, use: dict[int, float], now: float = 1000.0) -> None:
        self.proc, self.use, self.now = proc, use, now
        self.spent = dict.fromkeys(use, 0.0)
        self.write()

    def write(self) -> None:
        for pid, seconds in self.spent.items():
            write_stat(self.proc, pid, utime=round(seconds * TCK), stime=0)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        for pid, cores in self.use.items():
            self.spent[pid] += cores * seconds
        self.now += seconds
        self.write()


def test_cpu_window_reads_at_both_ends_and_gives_cost_per_message(tmp_path: Path) -> None:
    # two server processes at 0.5 and 0.25 of a core; the window opens 0.5 s from now
    fake = FakeTime(tmp_path, {10: 0.5, 11: 0.25})
    window = cpu_window(
        [10, 11],
        fake.now + 0.5,
        fake.now + 4.5,
        clock=fake.clock,
        sleep=fake.sleep,
        read=lambda pids: cpu_readings(pids, tmp_path),
    )
    assert (window.start, window.end, window.seconds) == (1000.5, 1004.5, 4.0)
    assert window.used == pytest.approx(3.0)  # 0.75 cores for 4 s
    assert window.used_by([11]) == pytest.approx(1.0)
    # 3 CPU seconds for 6000 deliveries in the window: 500 us each
    assert per_message_us(window.used, 6000) == 500.0
    assert core_percent(window.used_by([10]), window.seconds) == 50.0


def test_cost_per_message_needs_messages_and_a_known_cpu() -> None:
    assert per_message_us(1.5, 0) is None
    assert per_message_us(None, 100) is None
    assert per_message_us(0.0123, 1000) == 12.3
    assert core_percent(None, 5.0) is None and core_percent(1.0, 0.0) is None
    assert core_percent(0.15, 5.0) == 3.0


def test_a_window_that_lost_a_process_has_no_cost() -> None:
    window = CpuWindow(0.0, 2.0, {1: 1.0, 2: 1.0}, {1: 2.0})
    assert window.used is None
    assert window.used_by([1]) == 1.0
    assert per_message_us(window.used, 100) is None
