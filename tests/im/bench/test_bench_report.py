"""Tables, JSON and the chart of a bench run."""

from __future__ import annotations

import json

import pytest

from im.bench.report import format_table, write_chart, write_json


def test_table_aligns_numbers_right_and_text_left() -> None:
    text = format_table(
        "direct: 2 pairs",
        ["run", "sent", "p99 ms"],
        [["relay", 12474, 13.51], ["suite-open", 6696, None]],
        notes=["suite/relay 23%"],
    )
    lines = text.splitlines()
    assert lines[0] == "direct: 2 pairs"
    assert lines[1].split() == ["run", "sent", "p99", "ms"]
    assert set(lines[2].replace(" ", "")) == {"-"}
    assert lines[3].startswith("relay ") and lines[3].endswith("13.51")
    assert lines[4].endswith("-")  # None shows as a dash
    # the numeric column is right-aligned: both values end in the same column
    assert lines[3].index("12474") + 5 == lines[4].index("6696") + 4
    assert lines[-1] == "  * suite/relay 23%"


def test_float_formatting() -> None:
    text = format_table("t", ["v"], [[1234.0], [3.14159], [float("nan")]])
    assert text.splitlines()[3:] == ["1234", "3.14", "   -"]


def test_write_json(tmp_path) -> None:
    path = write_json(tmp_path / "run" / "bench.json", {"a": 1, "b": [1.5, None]})
    assert json.loads(path.read_text()) == {"a": 1, "b": [1.5, None]}


def test_chart_is_optional(tmp_path) -> None:
    points = [
        {"t": 0.0, "p50": 1.0, "p90": 2.0, "p99": 3.0},
        {"t": 1.0, "p50": 1.5, "p90": 2.5, "p99": 4.0},
    ]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert write_chart(tmp_path / "x.png", {"run": points}, "t") is None
        pytest.skip("matplotlib not installed: the chart is skipped, as tested")
    path = write_chart(tmp_path / "x.png", {"run": points, "other": points}, "t")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_chart(tmp_path / "y.png", {"empty": []}, "t") is None
