"""Stores and services that fail the way real ones do, for the router's tests."""

from __future__ import annotations

from im.adapters.sqlstore import SqlMessageStore
from im.ports import BackendUnavailable, RecordRejected


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
