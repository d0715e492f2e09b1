"""The indexes of the MongoDB message store (``mongo_store`` describes its documents)
and the background work that keeps them.

Only the unique (conversation_id, seq) index is created before a store's first call
goes ahead: correctness needs it. The others only speed things up and are built in
the background (``Upkeep``), because on a large collection a build runs for minutes,
far past the socket timeout, and no insert is to wait for it. Until they exist the
same queries work, slower: a recall's look-up of its target's edits names the
conversation, so MongoDB can use the (conversation_id, seq) index; a search and the
dead-letter list use whatever index the server picks, or none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo import ASCENDING, DESCENDING, timeout
from pymongo.asynchronous.collection import AsyncCollection

from im.adapters.mongo_search import MongoSearch
from im.clock import Clock

log = logging.getLogger("im.mongo_store")

SEQ_INDEX = "conversation_seq"
REFERS_INDEX = "refers_to"
DEAD_LETTER_INDEX = "at_ms"

# A background build: the server goes on building when a client gives up, and asking
# again only waits on that build, so wait long instead of the socket timeout.
INDEX_BUILD_SECONDS = 3600.0
# Backoff between attempts at the builds after a failure.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0
# How often the backfill looks again for documents stored without search_terms: during
# a rolling upgrade, processes of the older version go on storing such documents.
BACKFILL_EVERY_SECONDS = 600.0
# How long stop() lets a cancellation take before it cancels again.
STOP_CHECK_SECONDS = 0.05

Step = Callable[[], Awaitable[Any]]


async def create_seq_index(messages: AsyncCollection) -> None:
    """The index that guards the gap-free sequence (a no-op when it exists)."""
    await messages.create_index(
        [("conversation_id", ASCENDING), ("seq", ASCENDING)], unique=True, name=SEQ_INDEX
    )


async def build_speed_indexes(
    messages: AsyncCollection, letters: AsyncCollection, search: MongoSearch
) -> None:
    """The indexes that only speed things up (a no-op for those that exist)."""
    with timeout(INDEX_BUILD_SECONDS):
        await search.create_index()  # first: the backfill that follows looks it up
        await messages.create_index(
            [("refers_to", ASCENDING)],
            name=REFERS_INDEX,
            partialFilterExpression={"refers_to": {"$exists": True}},
        )
        # Newest first by (at_ms, _id): the index serves the whole sort.
        await letters.create_index(
            [("at_ms", DESCENDING), ("_id", DESCENDING)], name=DEAD_LETTER_INDEX
        )


class Upkeep:
    """A store's background work: runs ``build`` until it succeeds (with backoff), then
    ``backfill`` now and every BACKFILL_EVERY_SECONDS, until stopped."""

    def __init__(self, build: Step, backfill: Step, clock: Clock) -> None:
        self._build = build
        self._backfill = backfill
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Cancels the work and waits for its end. Once is not always enough: pymongo's
        lock can take a cancellation and go on (it acquires the lock anyway)."""
        while self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=STOP_CHECK_SECONDS)

    async def _run(self) -> None:
        delay = RETRY_FIRST_SECONDS
        while not await _attempt("index build", self._build):
            await self._clock.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
        while True:
            await _attempt("search backfill", self._backfill)
            await self._clock.sleep(BACKFILL_EVERY_SECONDS)


async def _attempt(what: str, step: Step) -> bool:
    """Runs a background step; False, logged, if it failed (it is tried again)."""
    try:
        await step()
        return True
    except Exception as exc:  # whatever it was, the background goes on
        log.warning("message store %s failed, to be tried again: %r", what, exc)
        return False
