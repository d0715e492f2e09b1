"""The one ordered message stream of ``ImClient`` (its base class).

What ``ImClient`` promises its user (DESIGN.md "at least once on the wire, exactly
once on the screen"):

- every message of every conversation appears once in ``events()``/``messages()``,
  whether it came live on the socket or was pulled from history by sync;
- per conversation in seq order: a live message that skips seqs first pulls the gap
  from the history endpoint;
- a message is acknowledged (DeliverAck for live ones, REST ack for synced ones) only
  once it has been handed to the stream, so the server's delivered cursor never runs
  ahead of what this client really holds.

The socket is opened before syncing (nothing sent in between is missed) and the live
messages that arrive meanwhile wait in the connection's queue until sync is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from im.client.connection import Connection, Event, SeenIds
from im.client.errors import ApiError
from im.client.gateway import GatewayClient
from im.v1 import wire_pb2

log = logging.getLogger("im.client")

_END = object()  # queued when the stream ends


class MessageStream:
    """Sync, history pulls and live deliveries merged into one stream, once each and
    in seq order per conversation; ``ImClient`` feeds it."""

    def __init__(self, gateway: GatewayClient, dedupe_size: int) -> None:
        self.gateway = gateway
        self._emitted = SeenIds(dedupe_size)
        self._cursor: dict[str, int] = {}  # highest seq handed out, per conversation
        self._synced = False
        self._dropped = 0  # duplicates caught here (sync/live overlap)
        self._out: asyncio.Queue[object] = asyncio.Queue()

    def _end(self) -> None:
        self._out.put_nowait(_END)

    def _reopen(self) -> None:
        """A new socket: the old end marker goes; what the user has not read stays,
        in the same queue (a reader may be waiting on it)."""
        kept = [self._out.get_nowait() for _ in range(self._out.qsize())]
        for item in kept:
            if item is not _END:
                self._out.put_nowait(item)

    def cursor(self, conversation_id: str) -> int:
        """Highest seq of ``conversation_id`` this client has handed out."""
        return self._cursor.get(conversation_id, 0)

    async def sync(self) -> int:
        """Pull what was missed in every conversation into the stream; count of new messages."""
        pulled = 0
        for conv in await self.gateway.sync():
            cid = conv["conversation_id"]
            base = max(self._cursor.get(cid, 0), int(conv.get("delivered_seq") or 0))
            self._cursor[cid] = base
            if int(conv.get("last_seq") or 0) <= base:
                continue
            pulled += await self._pull(cid, base, None)
        self._synced = True
        return pulled

    def follow(self, conversation_id: str, after_seq: int) -> None:
        """Treat ``conversation_id`` as seen up to ``after_seq`` (e.g. shown from
        history): a live message after a gap pulls the gap first, and a reconnect
        without sync catches it up from there."""
        cursor = self._cursor.get(conversation_id, 0)
        self._cursor[conversation_id] = max(cursor, after_seq)

    async def _catch_up(self) -> None:
        """After a reconnect without sync: what the known conversations missed."""
        for cid, seq in list(self._cursor.items()):
            try:
                await self._pull(cid, seq, None)
            except ApiError as exc:
                if exc.status not in (403, 404):
                    raise
                # no longer ours to read (left or removed): nothing to catch up
                log.info("not catching up %s: %s", cid, exc)

    async def _pull(self, cid: str, after_seq: int, until_seq: int | None) -> int:
        """Emit history after ``after_seq`` (up to ``until_seq``) and REST-ack it."""
        count = 0
        async for message in self.gateway.history_all(cid, after_seq, until_seq=until_seq):
            if self._emit(message):
                count += 1
        top = self._cursor.get(cid, 0)
        if top > after_seq:
            await self.gateway.ack(cid, top)
        return count

    def _emit(self, message: wire_pb2.Message) -> bool:
        if not self._emitted.add(message.msg_id):
            self._dropped += 1
            return False
        cid = message.conversation_id
        self._cursor[cid] = max(self._cursor.get(cid, 0), message.seq)
        self._out.put_nowait(message)
        return True

    async def _accept_live(self, conn: Connection, message: wire_pb2.Message) -> None:
        cid = message.conversation_id
        if cid not in self._cursor and not self._synced:
            self._cursor[cid] = message.seq - 1  # no sync: history starts here
        base = self._cursor.get(cid, 0)  # a conversation new since sync starts at 0
        if message.seq > base + 1:
            try:
                await self._pull(cid, base, message.seq - 1)
            except ApiError as exc:
                # e.g. history before we joined the group is not ours to see
                log.warning("could not pull %s after seq %d: %s", cid, base, exc)
        if not self._emit(message):
            # already handed out (it came by sync): make sure the connector stops resending
            await conn.ack(cid, self._cursor.get(cid, 0))
            return
        await conn.ack(cid, self._cursor[cid])

    # ------------------------------------------------------------------ reading

    async def events(self) -> AsyncIterator[Event]:
        """Messages (sync + live, once each), Receipts and Kicks until the connection
        ends; with reconnecting on, also ``Reconnecting``/``Reconnected`` (and the
        stream goes on after them)."""
        while True:
            item = await self._out.get()
            if item is _END:
                self._out.put_nowait(_END)
                return
            yield item  # type: ignore[misc]

    async def messages(self) -> AsyncIterator[wire_pb2.Message]:
        async for event in self.events():
            if isinstance(event, wire_pb2.Message):
                yield event
