"""Time as a dependency, so timeouts and retransmits are tested by moving a fake clock."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall_ms(self) -> int: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1000.0, wall_ms: int = 1_800_000_000_000) -> None:
        self._now = start
        self._wall_ms = wall_ms

    def monotonic(self) -> float:
        return self._now

    def wall_ms(self) -> int:
        return self._wall_ms + int((self._now) * 1000)

    def advance(self, seconds: float) -> None:
        self._now += seconds
