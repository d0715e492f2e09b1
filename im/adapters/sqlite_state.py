"""Revoked sessions and idempotency keys in a SQLite file: standalone's SessionStore
and IdempotencyStore, so a restart neither revives a logged-out token nor stores a
retried message a second time (the in-process presence may forget; these may not).

Expiry is by wall time (``clock.wall_ms``), the only time that means the same before
and after a restart. Calls are queued and applied in one transaction per batch on a
worker thread: the event loop never waits on the disk.

Idempotency keys are claimed once per Send, so they are answered from memory: every
live key is loaded when the store opens (what the in-memory store of a process that
ran for a whole TTL holds anyway) and new ones are written behind, a batch per turn of
the event loop, and all of them when the store closes. A SIGKILL can lose the claims
of the last moment, as it loses the messages the in-process bus had not stored yet.
Revocations are rare and must hold once ``revoke`` returns: they are written through.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from im.clock import Clock, SystemClock
from im.ports import BackendUnavailable

log = logging.getLogger("im.adapters.sqlite_state")

BACKEND = "state store"
STATE_FILE = "state.db"
PRUNE_EVERY = 60.0  # seconds of wall time between deletions of expired rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS revoked_sessions (
    session_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_revoked_sessions_expires ON revoked_sessions (expires_at);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_idempotency_keys_expires ON idempotency_keys (expires_at);
"""

# One queued call: it runs on the worker thread with the connection and "now".
Op = Callable[[sqlite3.Connection, float], Any]


def _revoke(session_id: str, ttl: float) -> Op:
    def op(db: sqlite3.Connection, now: float) -> None:
        # A second revocation never shortens the first.
        db.execute(
            "INSERT INTO revoked_sessions (session_id, expires_at) VALUES (?, ?) "
            "ON CONFLICT (session_id) DO UPDATE SET "
            "expires_at = max(expires_at, excluded.expires_at)",
            (session_id, now + ttl),
        )

    return op


def _is_revoked(session_id: str) -> Op:
    def op(db: sqlite3.Connection, now: float) -> bool:
        row = db.execute(
            "SELECT 1 FROM revoked_sessions WHERE session_id = ? AND expires_at > ?",
            (session_id, now),
        ).fetchone()
        return row is not None

    return op


# A claim written behind: (key, value, expires_at); value None deletes the key.
ClaimWrite = tuple[str, bytes | None, float]


def _write_claims(writes: list[ClaimWrite]) -> Op:
    def op(db: sqlite3.Connection, now: float) -> None:
        # In order (a release after its claim), each run of claims in one statement.
        puts: list[ClaimWrite] = []
        for write in writes:
            if write[1] is not None:
                puts.append(write)
                continue
            _put_claims(db, puts)
            puts = []
            db.execute("DELETE FROM idempotency_keys WHERE key = ?", (write[0],))
        _put_claims(db, puts)

    return op


def _put_claims(db: sqlite3.Connection, puts: list[ClaimWrite]) -> None:
    if puts:
        db.executemany(
            "INSERT OR REPLACE INTO idempotency_keys (key, value, expires_at) VALUES (?, ?, ?)",
            puts,
        )


def _live_claims(db: sqlite3.Connection, now: float) -> dict[str, tuple[bytes, float]]:
    rows = db.execute(
        "SELECT key, value, expires_at FROM idempotency_keys WHERE expires_at > ?", (now,)
    )
    return {key: (bytes(value), expires_at) for key, value, expires_at in rows}


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created private before SQLite opens it; SQLite gives its -wal and -shm files the
    # database file's mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a process crash
    db.executescript(_SCHEMA)
    return db


class SqliteStateStore:
    """SessionStore and IdempotencyStore on one SQLite file."""

    def __init__(self, path: Path, clock: Clock | None = None) -> None:
        self.path = path
        self._clock = clock or SystemClock()
        try:
            self._db = _open(path)
        except (sqlite3.Error, OSError) as exc:
            raise BackendUnavailable(BACKEND, f"{path}: {exc}") from exc
        self._lock = threading.Lock()  # one batch at a time on the connection
        self._queue: list[tuple[Op, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None
        self._next_prune = 0.0
        self._closed = False
        try:
            self._claims = _live_claims(self._db, self._now())
        except sqlite3.Error as exc:
            raise BackendUnavailable(BACKEND, f"{path}: {exc}") from exc
        self._claim_writes: list[ClaimWrite] = []
        self._writer: asyncio.Task | None = None
        self._next_sweep = self._now() + PRUNE_EVERY

    # ------------------------------------------------------------------ ports

    async def revoke(self, session_id: str, ttl: float) -> None:
        await self._call(_revoke(session_id, ttl))

    async def is_revoked(self, session_id: str) -> bool:
        return await self._call(_is_revoked(session_id))

    async def claim(self, key: str, value: bytes, ttl: float) -> bytes | None:
        if self._closed:
            raise BackendUnavailable(BACKEND, "closed")
        now = self._now()
        self._sweep(now)
        held = self._claims.get(key)
        if held is not None and held[1] > now:
            return held[0]
        self._claims[key] = (value, now + ttl)
        self._write_behind((key, value, now + ttl))
        return None

    async def claim_many(self, items: list[tuple[str, bytes]], ttl: float) -> list[bytes | None]:
        return [await self.claim(key, value, ttl) for key, value in items]

    async def release(self, key: str) -> None:
        if self._claims.pop(key, None) is not None:
            self._write_behind((key, None, 0.0))

    def _sweep(self, now: float) -> None:
        # Expired keys are ignored on read; one pass a minute keeps memory bounded.
        if now >= self._next_sweep:
            self._next_sweep = now + PRUNE_EVERY
            self._claims = {k: v for k, v in self._claims.items() if v[1] > now}

    def _write_behind(self, write: ClaimWrite) -> None:
        self._claim_writes.append(write)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_claims())

    async def _write_claims(self) -> None:
        """Writes the claims made meanwhile, a batch at a time, until none are left. A
        batch the disk refused is kept and tried again with the next one."""
        try:
            while self._claim_writes:
                batch, self._claim_writes = self._claim_writes, []
                try:
                    # A transaction of its own: a failure here fails no revocation.
                    await asyncio.to_thread(self._apply, [_write_claims(batch)], self._now())
                except sqlite3.Error as exc:
                    log.error("idempotency keys not written (%d): %r", len(batch), exc)
                    self._claim_writes[:0] = batch
                    if self._closed:
                        return
                    break
        finally:
            self._writer = None

    async def healthy(self) -> bool:
        try:
            await self._call(lambda db, now: db.execute("SELECT 1").fetchone())
        except BackendUnavailable:
            return False
        return True

    async def flush(self) -> None:
        """Returns once the claims made so far were written (or refused by the disk)."""
        if self._writer is not None:
            await self._writer
        if self._claim_writes:  # whatever a running writer had not picked up
            await self._write_claims()

    async def close(self) -> None:
        self._closed = True
        await self.flush()
        if self._drainer is not None:
            await self._drainer
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------- batching

    def _now(self) -> float:
        return self._clock.wall_ms() / 1000

    async def _call(self, op: Op) -> Any:
        if self._closed:
            raise BackendUnavailable(BACKEND, "closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((op, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Apply what is queued, one transaction per batch, until nothing is."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                ops = [op for op, _ in batch]
                try:
                    results = await asyncio.to_thread(self._apply, ops, self._now())
                except Exception as exc:
                    error = exc
                    if isinstance(exc, sqlite3.Error):
                        error = BackendUnavailable(BACKEND, f"{type(exc).__name__}: {exc}")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # its caller may have given up
                        future.set_result(result)
        finally:
            self._drainer = None

    def _apply(self, ops: list[Op], now: float) -> list[Any]:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")  # takes the write lock up front: no upgrade deadlock
            try:
                results = [op(db, now) for op in ops]
                if now >= self._next_prune:
                    self._next_prune = now + PRUNE_EVERY
                    db.execute("DELETE FROM revoked_sessions WHERE expires_at <= ?", (now,))
                    db.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return results
