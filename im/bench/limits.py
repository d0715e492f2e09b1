"""Process limits and measurements: open-file limit, resident memory, CPU time."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


def raise_nofile(want: int | None = None) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE: the soft limit to the hard one, and, when ``want`` is above
    the hard limit and we may (root / CAP_SYS_RESOURCE), the hard one too, up to
    fs.nr_open. Returns the (soft, hard) limits in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if want is not None and hard != resource.RLIM_INFINITY and want > hard:
        ceiling = _nr_open()
        target = min(want, ceiling) if ceiling else want
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            return resource.getrlimit(resource.RLIMIT_NOFILE)
        except (ValueError, OSError):
            pass  # not allowed: keep the hard limit we have
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _nr_open() -> int | None:
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text().strip())
    except (OSError, ValueError):
        return None


def ephemeral_ports() -> int:
    """How many local ports the kernel hands out for outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(high) - int(low) + 1
    except (OSError, ValueError):
        return 28_000


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB from /proc/<pid>/status (None if unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


PROC = Path("/proc")

# pid -> CPU seconds used so far (None: the process could not be read)
CpuReadings = dict[int, float | None]


def cpu_seconds(pid: int, proc: Path = PROC) -> float | None:
    """User + system CPU seconds used so far by ``pid`` (from /proc/<pid>/stat),
    all its threads included."""
    try:
        # the command name (field 2) may hold spaces and parentheses: split after it
        fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_readings(pids: Iterable[int], proc: Path = PROC) -> CpuReadings:
    return {pid: cpu_seconds(pid, proc) for pid in pids}


def cpu_used(before: CpuReadings, after: CpuReadings) -> float | None:
    """CPU seconds the processes used between two readings; None when one of them
    could not be read at either end (it exited, or was never there), since its share
    is then unknown and a sum without it would look plausible but be too low."""
    total = 0.0
    for pid, start in before.items():
        end = after.get(pid)
        if start is None or end is None:
            return None
        total += end - start
    return total


@dataclass(frozen=True)
class CpuWindow:
    """CPU readings of some processes at the two ends of a wall-clock window."""

    start: float  # time.time() of the first reading
    end: float  # time.time() of the second
    before: CpuReadings
    after: CpuReadings

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def used(self) -> float | None:
        """CPU seconds of all the processes within the window (None: unknown)."""
        return cpu_used(self.before, self.after)

    def used_by(self, pids: Iterable[int]) -> float | None:
        """CPU seconds of some of the processes within the window (None: unknown)."""
        return cpu_used({pid: self.before.get(pid) for pid in pids}, self.after)


def cpu_window(
    pids: Iterable[int],
    start: float,
    end: float,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    read: Callable[[Iterable[int]], CpuReadings] = cpu_readings,
) -> CpuWindow:
    """Read the processes' CPU at wall-clock ``start`` and again at ``end``, sleeping
    in between (the caller's load runs in other processes meanwhile). The readings'
    own times are kept: the window is what was read, not what was asked."""
    pids = list(pids)
    sleep(max(0.0, start - clock()))
    first_at, before = clock(), read(pids)
    sleep(max(0.0, end - clock()))
    return CpuWindow(first_at, clock(), before, read(pids))


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def wait_idle(
    pids: list[int], *, below: float = 0.1, sample: float = 0.5, timeout: float = 15.0
) -> float:
    """Wait until ``pids`` together use less than ``below`` of a core over ``sample``
    seconds (queued work from a previous phase is done), at most ``timeout`` seconds.
    Returns the last measured use in cores."""
    deadline = time.monotonic() + timeout
    while True:
        before = cpu_readings(pids)
        time.sleep(sample)
        # a process that went away has nothing left to finish
        use = (cpu_used(before, cpu_readings(pids)) or 0.0) / sample
        if use < below or time.monotonic() > deadline:
            return use


def system_busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy (all cores) since boot, /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
