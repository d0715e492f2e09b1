"""Per-address cap on sockets that have not authenticated yet.

An unauthenticated socket costs the connector memory and a slot until its auth
deadline, and anyone can open one: without a cap, one host can hold thousands open.
TCP and WebSocket sockets count together; a socket leaves the count when it
authenticates or closes.
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("im.connector.limits")

WS_POLICY_VIOLATION = 1008  # WebSocket close code of a socket refused by a limit
REFUSED_MESSAGE = "too many unauthenticated connections from this address"


class UnauthenticatedLimit:
    def __init__(self, per_address: int) -> None:
        self.per_address = per_address  # 0: no cap
        self._open: Counter[str] = Counter()
        self._warned: set[str] = set()  # addresses at the cap, logged once per episode
        self.refused = 0

    def take(self, address: str) -> bool:
        """Count a new socket from ``address``; False (not counted) when it is over the
        cap. Sockets of an unknown address ("") are not limited."""
        if not address:
            return True
        if self.per_address and self._open[address] >= self.per_address:
            self.refused += 1
            if address not in self._warned:
                self._warned.add(address)
                log.warning(
                    "refusing sockets from %s: %d unauthenticated ones open (limit %d)",
                    address,
                    self._open[address],
                    self.per_address,
                )
            return False
        self._open[address] += 1
        return True

    def give_back(self, address: str) -> None:
        """A counted socket authenticated or closed."""
        count = self._open.get(address, 0)
        if count <= 1:
            self._open.pop(address, None)
        else:
            self._open[address] = count - 1
        self._warned.discard(address)  # below the cap again: a new episode is logged

    def open_from(self, address: str) -> int:
        return self._open.get(address, 0)
