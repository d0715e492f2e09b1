"""Time-driven bookkeeping of the connector, written against an injectable clock.

One heap of retransmit deadlines for the whole connector (not a timer per message or
a task per connection), so 100k connections cost no idle tasks.
"""

from __future__ import annotations

import heapq


class RetransmitSchedule:
    """Deadlines for unacked deliveries with exponential backoff.

    ``key`` identifies one delivery (connection id, conversation, seq). The caller
    decides on each due entry whether it is still unacked (acks are not removed from
    the heap; stale entries are skipped when they come due).
    """

    def __init__(self, timeout: float, attempts: int) -> None:
        self.timeout = timeout
        self.attempts = attempts
        # (deadline, tie-break, key, attempt) tuples: cheaper than objects per entry
        self._heap: list[tuple[float, int, tuple, int]] = []
        self._order = 0

    def schedule(self, key: tuple, now: float, attempt: int = 0) -> None:
        """Arm the deadline for the given (0-based) resend attempt."""
        self._order += 1
        delay = self.timeout * (2**attempt)
        heapq.heappush(self._heap, (now + delay, self._order, key, attempt))

    def due(self, now: float) -> list[tuple[tuple, int]]:
        """Entries whose deadline passed: (key, attempt number that is now due)."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _at, _order, key, attempt = heapq.heappop(heap)
            out.append((key, attempt))
        return out

    def __len__(self) -> int:
        return len(self._heap)


class TokenBucket:
    """Per-connection send rate limit (refilled lazily from the clock)."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> bool:
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
