"""Standalone's revoked sessions and idempotency keys in SQLite: the same behaviour as
the other SessionStore/IdempotencyStore adapters, and it survives a reopen of the
file (a restart). Time is a FakeClock: expiry is tested by moving it."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from im.adapters.sqlite_state import PRUNE_EVERY, STATE_FILE, SqliteStateStore
from im.clock import FakeClock
from im.ports import BackendUnavailable

LONG = 3600.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / STATE_FILE


@pytest.fixture
async def store(path: Path, clock: FakeClock) -> AsyncIterator[SqliteStateStore]:
    s = SqliteStateStore(path, clock)
    yield s
    await s.close()


def rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# --------------------------------------------------------------- idempotency


async def test_claim_returns_none_then_the_stored_value(store: SqliteStateStore) -> None:
    assert await store.claim("1:abc", b"first", LONG) is None
    assert await store.claim("1:abc", b"second", LONG) == b"first"
    assert await store.claim("2:abc", b"other user", LONG) is None


async def test_claims_in_one_call_behave_as_one_by_one(store: SqliteStateStore) -> None:
    items = [("1:a", b"first"), ("1:a", b"second"), ("1:b", b"other")]
    assert await store.claim_many(items, LONG) == [None, b"first", None]


async def test_a_claim_expires_after_its_ttl(store: SqliteStateStore, clock: FakeClock) -> None:
    await store.claim("k", b"v1", 10)
    clock.advance(9.9)
    assert await store.claim("k", b"v2", 10) == b"v1"
    clock.advance(0.2)
    assert await store.claim("k", b"v2", 10) is None
    assert await store.claim("k", b"v3", 10) == b"v2"


async def test_release_frees_the_key(store: SqliteStateStore) -> None:
    await store.claim("k", b"v1", LONG)
    await store.release("k")
    assert await store.claim("k", b"v2", LONG) is None
    await store.release("never-claimed")  # nothing to do, no error


async def test_concurrent_claims_of_one_key_have_one_winner(store: SqliteStateStore) -> None:
    # All queued in one batch: they still apply one after the other.
    results = await asyncio.gather(*(store.claim("k", bytes([i]), LONG) for i in range(50)))
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1
    assert set(results) - {None} == {bytes([winners[0]])}


# ------------------------------------------------------------------ sessions


async def test_revoke_then_is_revoked_until_the_ttl(
    store: SqliteStateStore, clock: FakeClock
) -> None:
    assert not await store.is_revoked("s1")
    await store.revoke("s1", 30)
    assert await store.is_revoked("s1")
    assert not await store.is_revoked("s2")
    clock.advance(29)
    assert await store.is_revoked("s1")
    clock.advance(2)
    assert not await store.is_revoked("s1")


async def test_a_second_revocation_never_shortens_the_first(
    store: SqliteStateStore, clock: FakeClock
) -> None:
    await store.revoke("s1", 100)
    await store.revoke("s1", 1)
    clock.advance(50)
    assert await store.is_revoked("s1")


# ------------------------------------------------------------------- restart


async def test_revocations_and_keys_survive_a_reopen(path: Path, clock: FakeClock) -> None:
    first = SqliteStateStore(path, clock)
    await first.revoke("logged-out", LONG)
    assert await first.claim("7:retry", b"msg-1", LONG) is None
    await first.close()

    again = SqliteStateStore(path, clock)
    try:
        assert await again.is_revoked("logged-out")
        assert await again.claim("7:retry", b"msg-2", LONG) == b"msg-1"
        clock.advance(LONG + 1)  # and they still expire
        assert not await again.is_revoked("logged-out")
        assert await again.claim("7:retry", b"msg-3", LONG) is None
    finally:
        await again.close()


async def test_expired_rows_are_pruned(
    path: Path, store: SqliteStateStore, clock: FakeClock
) -> None:
    for i in range(20):
        await store.claim(f"k{i}", b"v", 5)
        await store.revoke(f"s{i}", 5)
    await store.claim("kept", b"v", LONG)
    clock.advance(PRUNE_EVERY + 1)
    await store.is_revoked("any")  # the next batch prunes
    assert rows(path, "idempotency_keys") == 1
    assert rows(path, "revoked_sessions") == 0


async def test_the_file_and_its_wal_are_private(path: Path, store: SqliteStateStore) -> None:
    await store.revoke("s", LONG)
    for name in (STATE_FILE, f"{STATE_FILE}-wal", f"{STATE_FILE}-shm"):
        assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name


async def test_calls_after_close_are_unavailable(path: Path, clock: FakeClock) -> None:
    s = SqliteStateStore(path, clock)
    await s.close()
    with pytest.raises(BackendUnavailable):
        await s.is_revoked("s")


async def test_a_database_error_is_unavailable_for_the_whole_batch(
    path: Path, clock: FakeClock
) -> None:
    store = SqliteStateStore(path, clock)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE revoked_sessions")
    results = await asyncio.gather(
        store.revoke("s", LONG), store.is_revoked("t"), return_exceptions=True
    )
    assert all(isinstance(r, BackendUnavailable) for r in results), results
    await store.close()
    again = SqliteStateStore(path, clock)  # recreates the table
    try:
        assert not await again.is_revoked("s")  # the failed batch stored nothing
    finally:
        await again.close()


async def test_claims_are_answered_from_memory_and_written_behind(
    path: Path, clock: FakeClock
) -> None:
    store = SqliteStateStore(path, clock)
    assert await store.claim("1:a", b"first", LONG) is None
    assert await store.claim("1:a", b"again", LONG) == b"first"  # before any write
    await store.flush()
    assert rows(path, "idempotency_keys") == 1
    await store.release("1:a")
    await store.close()  # writes what is left (the release)
    assert rows(path, "idempotency_keys") == 0


async def test_claims_the_disk_refused_are_written_with_the_next_batch(
    path: Path, clock: FakeClock
) -> None:
    store = SqliteStateStore(path, clock)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE idempotency_keys")
    assert await store.claim("1:a", b"v1", LONG) is None  # memory still answers
    await store.flush()  # the write failed; the claim is kept
    assert await store.claim("1:a", b"v2", LONG) == b"v1"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE idempotency_keys (key TEXT PRIMARY KEY, value BLOB, expires_at REAL)"
        )
    assert await store.claim("1:b", b"v3", LONG) is None
    await store.close()
    again = SqliteStateStore(path, clock)
    try:
        assert await again.claim("1:a", b"x", LONG) == b"v1"
        assert await again.claim("1:b", b"x", LONG) == b"v3"
    finally:
        await again.close()
