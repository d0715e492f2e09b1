"""One stream of publishes from all of a connector's connections to the bus.

A publish starts at once when fewer than ``max_flights`` are on their way; the Sends
that arrive meanwhile (from any connection) wait for a flight to land and then go
out together, the messages bound for one partition packed into one record. So an
idle connector publishes each message as it comes (no timer, no linger), and a busy
one pays the bus client's per-record costs once per partition and flight instead of
once per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from im import buspack
from im.ports import Bus

log = logging.getLogger("im.connector")

Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task]
# Flights on their way at once: two keep an idle connector's latency at one bus round
# trip, while the next flight gathers what arrives during the first.
MAX_FLIGHTS = 2


class Publisher:
    def __init__(
        self, bus: Callable[[], Bus], topic: str, spawn: Spawn, max_flights: int = MAX_FLIGHTS
    ) -> None:
        self._bus = bus  # looked up per flight: tests and the app may swap the bus
        self._topic = topic
        self._spawn = spawn
        self._max_flights = max_flights
        self._waiting: list[tuple[list[tuple[str, bytes]], asyncio.Future[None]]] = []
        self.flights = 0

    async def publish(self, records: list[tuple[str, bytes]]) -> None:
        """Returns once the bus took ``records``; raises what the bus raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((records, future))
        self._take_off()
        await future

    def _take_off(self) -> None:
        if self._waiting and self.flights < self._max_flights:
            waiting, self._waiting = self._waiting, []
            self.flights += 1
            self._spawn(self._fly(waiting))

    async def _fly(
        self, waiting: list[tuple[list[tuple[str, bytes]], asyncio.Future[None]]]
    ) -> None:
        records = [r for batch, _future in waiting for r in batch]
        try:
            await self._bus().publish_packed(self._topic, records, buspack.pack)
        except BaseException as exc:
            for _batch, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for _batch, future in waiting:
                if not future.done():
                    future.set_result(None)
        finally:
            self.flights -= 1
            self._take_off()
