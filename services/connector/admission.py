"""Admission control: under overload a connector refuses new Sends at once, with BUSY
and a retry-after, instead of taking more than the suite can deliver in time.

Two signals, both cheap to read on every Send:
- Sends in flight here: received and not yet answered (waiting for the bus). A bus
  that slows down fills this first.
- Router lag, as the routers report it with every Deliver call: how old the newest
  batch's oldest new message was when it went out. A router that cannot keep up
  makes this grow. A report wears off as time passes (a router that said "800 ms
  behind" and then went quiet has worked that off, or it would still be delivering
  and reporting), and is forgotten after a few seconds, so a router that stopped
  delivering to this connector (no traffic for it, or gone) no longer holds Sends
  back. Without that, the last report of a backlog, made as the router finished it,
  would keep refusing Sends to an idle router.

A refused Send is not stored and holds no msg_id: the client sends the same frame
again after the retry-after (the client library does) and it is handled afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# A lag report stands this long (seconds); routers deliver many times a second under
# the load that makes them lag.
LAG_REPORT_TTL = 3.0
# Bounds of the retry-after told to clients (milliseconds).
RETRY_AFTER_MIN_MS = 100
RETRY_AFTER_MAX_MS = 5000


@dataclass(slots=True)
class Admission:
    max_inflight: int
    max_lag_ms: int  # 0: the routers' lag is not looked at
    inflight: int = 0
    refused: int = 0
    # router id -> (lag in ms, monotonic time of the report)
    _lags: dict[str, tuple[int, float]] = field(default_factory=dict)

    def note_lag(self, router_id: str, lag_ms: int, now: float) -> None:
        self._lags[router_id] = (lag_ms, now)

    def lag_ms(self, now: float) -> int:
        """The highest lag the routers reported, less the time since each report."""
        worst = 0
        for router_id, (lag, at) in list(self._lags.items()):
            left = lag - int((now - at) * 1000)
            if left <= 0 or now - at > LAG_REPORT_TTL:
                del self._lags[router_id]
            elif left > worst:
                worst = left
        return worst

    def retry_after_ms(self, now: float) -> int | None:
        """None to take a Send; otherwise refuse it and say when to try again."""
        if self.inflight >= self.max_inflight:
            self.refused += 1
            return RETRY_AFTER_MIN_MS
        if self.max_lag_ms and self._lags:
            lag = self.lag_ms(now)
            if lag > self.max_lag_ms:
                self.refused += 1
                # About the time the routers need to catch up with what they hold.
                return max(RETRY_AFTER_MIN_MS, min(RETRY_AFTER_MAX_MS, lag))
        return None
