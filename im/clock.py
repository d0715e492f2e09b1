"""Time as a dependency, so timeouts, retransmits and backoffs are tested by moving a
fake clock."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall_ms(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that only moves when told to; its ``sleep`` returns once ``advance``
    has moved it past the sleeper's deadline."""

    def __init__(self, start: float = 1000.0, wall_ms: int = 1_800_000_000_000) -> None:
        self._now = start
        self._wall_ms = wall_ms
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._sleeping = asyncio.Event()

    def monotonic(self) -> float:
        return self._now

    def wall_ms(self) -> int:
        return self._wall_ms + int((self._now) * 1000)

    def advance(self, seconds: float) -> None:
        self._now += seconds
        for deadline, future in list(self._sleepers):
            if deadline <= self._now and not future.done():
                future.set_result(None)

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self._now + max(0.0, seconds), future)
        self._sleepers.append(entry)
        self._sleeping.set()
        try:
            if seconds <= 0:
                future.set_result(None)
            await future
        finally:
            self._sleepers.remove(entry)

    @property
    def sleeps(self) -> list[float]:
        """Seconds left of each sleep in progress, in the order they began."""
        return [deadline - self._now for deadline, future in self._sleepers if not future.done()]

    async def wait_for_sleep(self) -> float:
        """Wait until something sleeps on this clock; the seconds left of the first
        such sleep (how a test knows a backoff began, without sleeping itself)."""
        while not self.sleeps:
            self._sleeping.clear()
            await self._sleeping.wait()
        return self.sleeps[0]
