"""Acks and reads from clients, on their way to the router as cursor reports.

Every report is checked before it reaches the bus: a well-formed conversation id, a
seq a BIGINT column can hold, and membership (from the send authorizer's cache, or a
batched lookup for conversations it does not know yet). Reports are coalesced per
(user, conversation) between flushes, so any number of acks for one conversation cost
one record; a connection may open only so many new entries per second, and only so
many lookups may wait, so a flood of reads for strangers' or made-up conversations
costs its sender errors and nobody else anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from im.clock import Clock
from im.config import Settings
from im.ids import is_valid_conversation_id
from im.ports import Backends
from im.v1 import bus_pb2, wire_pb2
from services.connector.authorizer import Authorizer
from services.connector.conn import Conn

log = logging.getLogger("im.connector")

E = wire_pb2
MAX_SEQ = (1 << 63) - 1  # what the cursor columns (BIGINT) and the store can hold
MAX_UNVERIFIED = 1000  # conversations per connection waiting for a membership lookup

Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task]


class CursorReports:
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        authorizer: Authorizer,
        clock: Clock,
        spawn: Spawn,
    ) -> None:
        self._settings = settings
        self._backends = backends
        self.authorizer = authorizer
        self._clock = clock
        self._spawn = spawn
        # (user, conversation) -> [delivered_seq, read_seq], flushed to the bus in batches
        self._reports: dict[tuple[int, str], list[int]] = {}
        self.rejected = 0

    def report(
        self,
        conn: Conn,
        conversation_id: str,
        delivered: int = 0,
        read: int = 0,
        request_id: int = 0,
        known_member: bool = False,
    ) -> None:
        """An ack (delivered) or read from an authenticated connection."""
        delivered, read = min(delivered, MAX_SEQ), min(read, MAX_SEQ)
        # Most acks land on an entry already checked in this flush window: merge first.
        if self._merge(conn, conversation_id, delivered, read, request_id):
            return
        if not is_valid_conversation_id(conversation_id):
            self._reject(
                conn,
                E.ERROR_CODE_INVALID_ARGUMENT,
                f"malformed conversation_id {conversation_id[:80]!r}",
                request_id,
            )
            return
        bucket = conn.cursor_bucket
        if bucket is not None and not bucket.take(self._clock.monotonic()):
            self._reject(
                conn,
                E.ERROR_CODE_RATE_LIMITED,
                "too many acks and reads for different conversations; slow down",
                request_id,
            )
            return
        member = True if known_member else self.authorizer.cached(conn.user_id, conversation_id)
        if member:
            self._add(conn.user_id, conversation_id, delivered, read)
        elif member is False:
            self._reject_stranger(conn, conversation_id, request_id)
        else:
            self._verify_later(conn, conversation_id, delivered, read, request_id)

    def _merge(
        self, conn: Conn, conversation_id: str, delivered: int, read: int, request_id: int
    ) -> bool:
        """Fold into an entry already accepted or waiting for its lookup: free."""
        entry = self._reports.get((conn.user_id, conversation_id))
        if entry is None:
            entry = conn.unverified.get(conversation_id)
            if entry is None:
                return False
            entry[2] = request_id
        entry[0] = max(entry[0], delivered)
        entry[1] = max(entry[1], read)
        return True

    def _add(self, user_id: int, conversation_id: str, delivered: int, read: int) -> None:
        entry = self._reports.get((user_id, conversation_id))
        if entry is None:
            self._reports[(user_id, conversation_id)] = [delivered, read]
        else:
            entry[0] = max(entry[0], delivered)
            entry[1] = max(entry[1], read)

    def _reject(self, conn: Conn, code: int, message: str, request_id: int) -> None:
        self.rejected += 1
        conn.fail(code, message, request_id=request_id)

    def _reject_stranger(self, conn: Conn, conversation_id: str, request_id: int) -> None:
        self._reject(conn, E.ERROR_CODE_FORBIDDEN, f"not a member of {conversation_id}", request_id)

    # ------------------------------------------------------------ membership lookups

    def _verify_later(
        self, conn: Conn, conversation_id: str, delivered: int, read: int, request_id: int
    ) -> None:
        if len(conn.unverified) >= MAX_UNVERIFIED:
            self._reject(
                conn,
                E.ERROR_CODE_RATE_LIMITED,
                "too many conversations waiting for a membership check; slow down",
                request_id,
            )
            return
        conn.unverified[conversation_id] = [delivered, read, request_id]
        if conn.verify_worker is None:
            conn.verify_worker = self._spawn(self._verify(conn))

    async def _verify(self, conn: Conn) -> None:
        # One worker per connection while lookups wait; each round is one batched
        # membership call for everything that queued up meanwhile.
        try:
            while conn.unverified and not conn.closed:
                batch, conn.unverified = conn.unverified, {}
                try:
                    members = await self.authorizer.members_of(conn.user_id, list(batch))
                except Exception as exc:
                    log.warning("membership lookup for %d reports failed: %r", len(batch), exc)
                    for conversation_id, (_d, _r, request_id) in batch.items():
                        self._reject(
                            conn,
                            E.ERROR_CODE_UNAVAILABLE,
                            f"could not check membership of {conversation_id}; retry",
                            request_id,
                        )
                    continue
                for conversation_id, (delivered, read, request_id) in batch.items():
                    if conversation_id in members:
                        self._add(conn.user_id, conversation_id, delivered, read)
                    else:
                        self._reject_stranger(conn, conversation_id, request_id)
        finally:
            conn.verify_worker = None
            if conn.closed:
                conn.unverified.clear()

    # ------------------------------------------------------------------- flushing

    async def flush(self) -> int:
        """Publish the coalesced acks and reads (many acks -> one record per member)."""
        if not self._reports:
            return 0
        reports, self._reports = self._reports, {}
        records = [
            (
                conv,
                bus_pb2.CursorReport(
                    conversation_id=conv, user_id=uid, delivered_seq=d, read_seq=r
                ).SerializeToString(),
            )
            for (uid, conv), (d, r) in reports.items()
        ]
        try:
            await self._backends.bus.publish_many(self._settings.topic_cursors, records)
        except Exception as exc:
            log.warning("could not publish %d cursor reports: %s", len(records), exc)
            for (uid, conv), (d, r) in reports.items():  # keep them for the next flush
                self._add(uid, conv, d, r)
            return 0
        return len(records)
