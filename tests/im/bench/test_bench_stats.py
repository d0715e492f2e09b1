"""Percentile math, latency summaries, per-second series and the delivery bitmaps."""

from __future__ import annotations

import math
from array import array

import pytest

from im.bench.loadgen.messaging import Bitmap, bits
from im.bench.stats import (
    count_in_window,
    pack_samples,
    percentile,
    ratio,
    series,
    summarize,
    unpack_samples,
)


def test_percentile_interpolates_between_ranks() -> None:
    data = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(data, 0) == 1.0
    assert percentile(data, 50) == 3.0
    assert percentile(data, 100) == 5.0
    assert percentile(data, 25) == 2.0
    assert percentile(data, 90) == pytest.approx(4.6)
    assert percentile([10.0, 20.0], 50) == 15.0


def test_percentile_matches_numpy_linear_on_a_range() -> None:
    data = [float(i) for i in range(1, 1001)]
    # numpy.percentile(range(1, 1001), 99) == 990.01
    assert percentile(data, 99) == pytest.approx(990.01)
    assert percentile(data, 50) == pytest.approx(500.5)


def test_percentile_edge_cases() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize() -> None:
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s == {"count": 5, "p50": 3.0, "p90": 4.6, "p99": 4.96, "max": 5.0, "mean": 3.0}
    assert summarize([])["count"] == 0 and summarize([])["p99"] is None


def test_series_buckets_by_arrival_second() -> None:
    arrivals = [0.1, 0.5, 0.9, 1.2, 2.7]
    latencies = [1.0, 2.0, 3.0, 10.0, 20.0]
    out = series(arrivals, latencies, 1.0)
    assert [(p["t"], p["deliveries"]) for p in out] == [(0.0, 3), (1.0, 1), (2.0, 1)]
    assert out[0]["p50"] == 2.0 and out[0]["max"] == 3.0 and out[0]["rate"] == 3.0
    assert count_in_window(arrivals, 0.0, 1.0) == 3


def test_samples_round_trip_between_processes() -> None:
    a, lat = array("f", [0.5, 1.5]), array("f", [3.25, 4.5])
    back_a, back_lat = unpack_samples(pack_samples(a, lat))
    assert list(back_a) == [0.5, 1.5] and list(back_lat) == [3.25, 4.5]
    with pytest.raises(ValueError):
        pack_samples(array("f", [1.0]), array("f"))


def test_ratio() -> None:
    assert ratio(50.0, 100.0) == 0.5
    assert ratio(None, 100.0) is None and ratio(1.0, 0.0) is None


def test_bitmap_counts_acked_and_received() -> None:
    acked, got = Bitmap(), Bitmap()
    for n in (0, 1, 2, 3, 100, 1000):
        assert acked.add(n)
    assert not acked.add(3)  # a duplicate
    for n in (0, 2, 100):
        got.add(n)
    assert 100 in acked and 99 not in acked
    lost = bits(acked.to_bytes()) & ~bits(got.to_bytes())
    assert lost.bit_count() == 3  # 1, 3 and 1000 never arrived
    assert bits(Bitmap().to_bytes()) == 0


async def test_open_loop_keeps_the_clock_rate_and_is_not_late_when_idle() -> None:
    import asyncio

    from im.bench.loadgen.messaging import Messaging

    spec = {
        "mode": "open",
        "duration": 0.5,
        "rate": 40.0,
        "late_ms": 10.0,
        "senders": [{"gid": 1, "conv": "d:1:2"}, {"gid": 2, "conv": "d:1:2"}],
        "members": [],
    }
    m = Messaging(spec)
    sent: list[tuple[int, int, float]] = []
    loop = asyncio.get_running_loop()
    m._spawn_send = lambda gid, n: sent.append((gid, n, loop.time()))  # type: ignore[method-assign]
    t0 = loop.time()
    await m._open_loop([1, 2], t0, t0 + 0.5)
    assert 19 <= len(sent) <= 21  # 40/s for 0.5 s, the first one at once
    assert [(g, n) for g, n, _ in sent[:4]] == [(1, 0), (2, 0), (1, 1), (2, 1)]
    assert m.late == 0
    for i, (_, _, at) in enumerate(sent):
        assert at >= t0 + i / 40.0 - 0.002  # never ahead of its slot
