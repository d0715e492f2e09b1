"""Numbers of the benchmark: percentiles, latency summaries, per-interval series.

Latencies travel between processes as packed float32 arrays (``array('f')``): a
delivery is (arrival time in seconds since the run's start, latency in ms).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence

PERCENTILES = (50.0, 90.0, 99.0)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) of already sorted values, linear interpolation
    between closest ranks (numpy's default); NaN for no values."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must be within 0..100, not {p}")
    if n == 1:
        return float(sorted_values[0])
    rank = (n - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, n - 1)
    frac = rank - low
    return (
        float(sorted_values[low]) + (float(sorted_values[high]) - float(sorted_values[low])) * frac
    )


def summarize(values: Iterable[float]) -> dict[str, float | int]:
    """count, p50, p90, p99, max, mean of ``values`` (ms); NaN-free: None where empty."""
    data = sorted(values)
    if not data:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}  # type: ignore[dict-item]
    return {
        "count": len(data),
        "p50": round(percentile(data, 50), 3),
        "p90": round(percentile(data, 90), 3),
        "p99": round(percentile(data, 99), 3),
        "max": round(data[-1], 3),
        "mean": round(sum(data) / len(data), 3),
    }


def pack_samples(arrivals: array, latencies: array) -> bytes:
    """Two float32 arrays of equal length as bytes (arrivals first)."""
    if len(arrivals) != len(latencies):
        raise ValueError("arrivals and latencies differ in length")
    return arrivals.tobytes() + latencies.tobytes()


def unpack_samples(data: bytes) -> tuple[array, array]:
    both = array("f")
    both.frombytes(data)
    half = len(both) // 2
    return both[:half], both[half:]


def series(
    arrivals: Sequence[float], latencies: Sequence[float], bucket: float = 1.0
) -> list[dict[str, float | int]]:
    """Per ``bucket`` seconds of arrival time: deliveries, rate and latency percentiles."""
    if bucket <= 0:
        raise ValueError("bucket must be positive")
    buckets: dict[int, list[float]] = {}
    for t, lat in zip(arrivals, latencies, strict=True):
        buckets.setdefault(int(t // bucket), []).append(lat)
    out: list[dict[str, float | int]] = []
    for key in sorted(buckets):
        values = sorted(buckets[key])
        out.append(
            {
                "t": round(key * bucket, 3),
                "deliveries": len(values),
                "rate": round(len(values) / bucket, 1),
                "p50": round(percentile(values, 50), 3),
                "p90": round(percentile(values, 90), 3),
                "p99": round(percentile(values, 99), 3),
                "max": round(values[-1], 3),
            }
        )
    return out


def count_in_window(arrivals: Iterable[float], start: float, end: float) -> int:
    return sum(1 for t in arrivals if start <= t < end)


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0:
        return None
    return round(value / base, 3)


def per_message_us(cpu_seconds: float | None, messages: int) -> float | None:
    """CPU microseconds per message; None when the CPU is unknown or nothing was
    delivered (a cost per message of zero messages means nothing)."""
    if cpu_seconds is None or messages <= 0:
        return None
    return round(cpu_seconds * 1e6 / messages, 1)


def core_percent(cpu_seconds: float | None, seconds: float) -> float | None:
    """CPU seconds used over ``seconds`` of wall clock, in percent of one core."""
    if cpu_seconds is None or seconds <= 0:
        return None
    return round(cpu_seconds / seconds * 100, 2)
