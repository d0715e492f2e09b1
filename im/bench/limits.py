"""Process limits and measurements: open-file limit, resident memory, CPU time."""

from __future__ import annotations

import os
import resource
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


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by ``pid`` (from /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


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
    import time

    deadline = time.monotonic() + timeout
    use = 0.0
    while True:
        before = sum(cpu_seconds(p) or 0.0 for p in pids)
        time.sleep(sample)
        use = (sum(cpu_seconds(p) or 0.0 for p in pids) - before) / sample
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
