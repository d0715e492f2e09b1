"""A messaging run's numbers from its workers' results (no sockets, no processes)."""

from __future__ import annotations

from array import array
from typing import Any

from im.bench.loadgen.messaging import Bitmap
from im.bench.scenarios.messaging import MESSAGING_HEADERS, Plan, aggregate, messaging_rows
from im.bench.stats import pack_samples


def bitmap(*numbers: int) -> bytes:
    b = Bitmap()
    for n in numbers:
        b.add(n)
    return b.to_bytes()


def worker_result(**over: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "sent": 0,
        "refused": 0,
        "late": 0,
        "echo": 0,
        "peer_deliveries": 0,
        "app_dups": 0,
        "wire_dups": 0,
        "retransmits": 0,
        "cpu_seconds": 0.1,
        "max_lag_ms": 0.0,
        "errors": {},
        "closed_early": {},
        "acked": {},
        "received": {},
        "samples": pack_samples(array("f"), array("f")),
        "ack_latencies": b"",
        "send_seconds": 3.0,
    }
    result.update(over)
    return result


def test_refused_counted_apart_and_deliveries_counted_within_the_cpu_window() -> None:
    # one pair: 0 sends to 1; 10 sent, 3 refused with BUSY, 7 acked, 6 of them delivered
    plan = Plan(
        members=[],
        senders=[{"gid": 0, "conv": "d:1:2"}],
        receivers={"d:1:2": [0, 1]},
        groups=[[0, 1]],
    )
    infos = [{"connected": 2, "connected_gids": [0, 1]}]
    arrivals = array("f", [0.2, 0.6, 1.0, 2.5, 2.9, 3.4])  # the last after sending ended
    latencies = array("f", [1.0, 2.0, 3.0, 4.0, 5.0, 100.0])
    results = [
        worker_result(
            sent=10,
            refused=3,
            acked={0: bitmap(0, 1, 2, 4, 6, 8, 9)},
            received={1: {0: bitmap(0, 1, 2, 4, 6, 8)}},
            peer_deliveries=6,
            samples=pack_samples(arrivals, latencies),
        )
    ]
    out = aggregate(
        plan, infos, results, 3.0, mode="open", rate=10 / 3, window=8, steady=(0.5, 3.0)
    )
    assert (out["sent"], out["acked"], out["refused"]) == (10, 7, 3)
    assert out["delivered"] == 6 and out["lost"] == 1  # 9 acked, never delivered
    assert out["steady_deliveries"] == 4  # 0.6, 1.0, 2.5, 2.9
    assert out["steady_seconds"] == 2.5
    assert out["latency_ms"]["max"] == 100.0  # latency counts every delivery
    # without a window: the sending time
    whole = aggregate(plan, infos, results, 3.0, mode="open", rate=10 / 3, window=8)
    assert whole["steady_deliveries"] == 5


def test_rows_have_a_cell_per_header_with_refused_and_cpu_per_message() -> None:
    run = {
        "mode": "open",
        "rate_target": 100.0,
        "window": None,
        "scheduled": 300,
        "sent": 300,
        "acked": 280,
        "refused": 20,
        "delivered": 280,
        "lost": 0,
        "dup_wire": 0,
        "late": 0,
        "throughput": 93.3,
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0},
        "server_cores": 0.5,
        "server_cpu_us_per_msg": 812.5,
        "generator_cores": 0.2,
        "other_cores": 0.1,
    }
    (row,) = messaging_rows("direct", {"suite-overload": run})
    assert len(row) == len(MESSAGING_HEADERS)
    cells = dict(zip(MESSAGING_HEADERS, row, strict=True))
    assert cells["run"] == "direct:suite-overload" and cells["load"] == "open 100/s"
    assert cells["refused"] == 20 and cells["srv us/msg"] == 812.5
