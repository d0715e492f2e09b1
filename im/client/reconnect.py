"""Staying connected: what ``ImClient(reconnect=...)`` does when its socket ends.

The protocol (docs/protocol.md "Kicks") asks a client whose connector drains
(``Kick{RECONNECT}``) to log in again and take the connector the gateway names then; a
socket cut off (connector gone, network down, heartbeat timeout) is the same case. So,
until ``close()``:

- after a pause that starts at ``initial_delay`` and doubles up to ``max_delay`` (with
  some jitter, so that the clients of a drained connector do not all come back at
  once; a gateway's Retry-After is respected), the client logs in again (by its refresh
  token, else the password it logged in with), opens a socket to the connector it is
  given and catches up what it missed; the same messages stream goes on, once each;
- the stream says so: a ``Reconnecting`` event before each pause and ``Reconnected``
  once the new socket is up;
- some ends are final, and end the stream as without reconnecting: the same device
  logged in elsewhere or its session ended (``DEVICE_LOGGED_IN_ELSEWHERE``,
  ``TOKEN_REVOKED``: coming back would undo what the user did elsewhere), the password
  refused (changed meanwhile), or ``max_attempts`` used up.

Time comes from a ``Clock`` (im/clock.py), so tests move a fake one instead of waiting.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from im.client.errors import ApiError, ClientError
from im.clock import Clock
from im.v1 import wire_pb2

# Kicks after which coming back would undo what happened elsewhere.
FINAL_KICKS = frozenset(
    {wire_pb2.KICK_REASON_DEVICE_LOGGED_IN_ELSEWHERE, wire_pb2.KICK_REASON_TOKEN_REVOKED}
)
# Gateway answers that another try will not change (the password changed, the user or
# device id is refused); anything else (unreachable, 429, 5xx, a connector that is
# gone or refuses) is tried again.
FINAL_STATUSES = frozenset({400, 401, 403, 404, 409, 422})


@dataclass(frozen=True)
class ReconnectPolicy:
    initial_delay: float = 0.5
    max_delay: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2  # each pause is its nominal length +- this fraction
    max_attempts: int | None = None  # None: until close()

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The pause before attempt number ``attempt`` (1, 2, ...)."""
        nominal = min(self.max_delay, self.initial_delay * self.factor ** max(0, attempt - 1))
        return max(0.0, nominal * (1 + self.jitter * (2 * rand() - 1)))


@dataclass(frozen=True)
class Reconnecting:
    """The socket ended (``reason``); attempt ``attempt`` follows in ``delay`` s."""

    reason: str
    attempt: int
    delay: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "reconnecting": {
                "reason": self.reason,
                "attempt": self.attempt,
                "delay": round(self.delay, 3),
            }
        }


@dataclass(frozen=True)
class Reconnected:
    """A new socket is up (to ``connector_id``) after ``attempts`` attempts; what was
    missed meanwhile follows in the stream."""

    connector_id: str
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return {"reconnected": {"connector_id": self.connector_id, "attempts": self.attempts}}


def final_kick(kick: wire_pb2.Kick | None) -> bool:
    return kick is not None and kick.reason in FINAL_KICKS


def final_error(exc: BaseException) -> bool:
    """True for a failed attempt that another attempt would not fix."""
    if isinstance(exc, ApiError):
        return exc.status in FINAL_STATUSES
    # No credentials left (logout_all, or never logged in with a password).
    return type(exc) is ClientError


class Reconnector:
    """Runs the attempts; ``connect(attempt)`` opens the new socket (raising when it
    cannot), ``emit`` puts an event in the stream, ``give_up(reason)`` ends it."""

    def __init__(
        self,
        policy: ReconnectPolicy,
        clock: Clock,
        connect: Callable[[int], Awaitable[None]],
        emit: Callable[[object], None],
        give_up: Callable[[str], None],
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._connect = connect
        self._emit = emit
        self._give_up = give_up
        self._rand = rand

    async def run(self, reason: str) -> None:
        attempt = 0
        wait_at_least = 0.0
        while True:
            attempt += 1
            if self.policy.max_attempts is not None and attempt > self.policy.max_attempts:
                self._give_up(f"{reason} (gave up after {attempt - 1} attempts)")
                return
            delay = max(self.policy.delay(attempt, self._rand), wait_at_least)
            self._emit(Reconnecting(reason, attempt, delay))
            await self._clock.sleep(delay)
            try:
                await self._connect(attempt)
            except Exception as exc:
                if final_error(exc):
                    self._give_up(f"cannot reconnect: {exc}")
                    return
                reason = f"reconnect failed: {exc}"
                wait_at_least = getattr(exc, "retry_after", None) or 0.0
                continue
            return
