"""Stores and services that fail the way real ones do, and a push notifier that
records, for the router's tests."""

from __future__ import annotations

from collections.abc import Set

from im.adapters.sqlstore import SqlMessageStore
from im.ports import BackendUnavailable, PushNotification, PushStats, RecordRejected


class FailingStore:
    """The SQL store, with insert_many failing as a whole on demand, after storing a
    prefix of the batch (as an unordered or interrupted write would)."""

    def __init__(self, store: SqlMessageStore) -> None:
        self._store = store
        self.fail_after: int | None = None

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._store, name)

    async def insert_many(self, messages):  # type: ignore[no-untyped-def]
        if self.fail_after is not None:
            keep, self.fail_after = self.fail_after, None
            await self._store.insert_many(messages[:keep])
            raise BackendUnavailable("message store", "connection reset")
        return await self._store.insert_many(messages)


class RejectingStore(FailingStore):
    """Refuses one msg_id by itself, as a store refuses a value it cannot hold."""

    def __init__(self, store: SqlMessageStore, bad: int) -> None:
        super().__init__(store)
        self.bad = bad

    async def insert_many(self, messages):  # type: ignore[no-untyped-def]
        for i, m in enumerate(messages):
            if m.msg_id == self.bad:
                await self._store.insert_many(messages[:i])
                raise RecordRejected(i, "value too long")
        return await self._store.insert_many(messages)


class CursorsFailOnce:
    """A group service stub whose next UpdateCursors fails as a whole, once."""

    def __init__(self, stub) -> None:  # type: ignore[no-untyped-def]
        self._stub = stub
        self.failures = 1

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._stub, name)

    async def UpdateCursors(self, request, timeout=None):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise BackendUnavailable("group service", "connection reset")
        return await self._stub.UpdateCursors(request, timeout=timeout)


class RecordingNotifier:
    """The push port, keeping what it is offered and what it is told to take back."""

    def __init__(self) -> None:
        self.stats = PushStats()
        self.got: list[PushNotification] = []
        self.withdrawn: set[tuple[str, int]] = set()

    def offer(self, notifications: list[PushNotification]) -> int:
        self.got += notifications
        self.stats.queued += len(notifications)
        return len(notifications)

    def withdraw(self, messages: Set[tuple[str, int]]) -> None:
        self.withdrawn |= messages

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass
