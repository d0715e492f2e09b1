"""Messages a connector acked lately, kept to be published again if the bus says it
may have lost records it had acknowledged (``Bus.epoch`` changed: a broker that came
back without its topics). The router stores a msg_id once, so publishing a message it
already has costs it one lookup; publishing one the broker lost saves it."""

from __future__ import annotations

from collections import deque


class ReplayWindow:
    def __init__(self, seconds: float, max_records: int) -> None:
        self.seconds = seconds
        self.max_records = max_records
        self._records: deque[tuple[float, str, bytes]] = deque()
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self._records)

    def add(self, records: list[tuple[str, bytes]], now: float) -> None:
        """Records (key, value) the bus just acknowledged."""
        if self.seconds <= 0:
            return
        self._records.extend((now, key, value) for key, value in records)
        horizon = now - self.seconds
        while self._records and (
            self._records[0][0] < horizon or len(self._records) > self.max_records
        ):
            self._records.popleft()

    def lost_since(self, epoch: int) -> list[tuple[str, bytes]]:
        """Every kept record if the bus epoch moved since the last call (the first
        call only notes it); else nothing."""
        previous, self._epoch = self._epoch, epoch
        if previous is None or previous == epoch:
            return []
        return [(key, value) for _at, key, value in self._records]
