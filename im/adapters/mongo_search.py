"""Message search for the MongoDB message store: a keyword index.

Each message document carries ``search_terms``: the distinct words of its body
(``im.search.index_words``: folded to lower case without accents; none for a message
that is not text), under a multikey index ``(search_terms, _id desc)``. A search asks
for documents holding every query word (``$all``), in the reader's conversations past
each join point, newest first.

Why not a text index and ``$text``, what real MongoDB would use: SecantusDB, the
server the project is tested on, refuses text indexes ("text indexes are not supported
by SecantusDB") and ``$text``. The keyword array works on both and matches exactly the
whole words the SQL backends match. On MongoDB proper, a text index over a string copy
of the body (``{search_text: "text"}``, default_language "none") with ``$text:
{$search: '"w1" "w2"'}`` would give stemming and relevance scores; Atlas Search more.

A document store has no triggers: whoever changes a stored body must set
``search_fields(...)`` in the same update. In case one does not, every hit is checked
against the body as stored before it is returned, so an erased body (a recall) never
matches, and recalled documents are skipped outright.
"""

from __future__ import annotations

import logging
from typing import Any

from bson import Int64
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from im.clock import Clock, SystemClock
from im.search import index_words, matches

log = logging.getLogger("im.mongo_store")

SEARCH_INDEX = "search_terms"
SEARCH_FIELD = "search_terms"
# The fill of search_terms for documents stored without it: documents per batch, and
# the shortest pause after a full batch (otherwise as long as the batch took).
BACKFILL_BATCH = 500
BACKFILL_MIN_PAUSE = 0.01
# Hits checked per search at most (stale index entries are rare: a body changed in
# place without its search_terms).
SCAN_FACTOR = 4
SCAN_EXTRA = 100


def search_fields(content_type: str, body: bytes) -> dict[str, Any]:
    """The search fields of a message: for its insert, and for any update that
    changes its body or content type (``{"$set": {"body": ..., **search_fields(...)}}``)."""
    return {SEARCH_FIELD: index_words(content_type, bytes(body))}


def scope_filter(scope: dict[str, int]) -> dict[str, Any]:
    """The conversations in scope, each past its join point (most at 0: one $in)."""
    from_start = [cid for cid, after in scope.items() if after <= 0]
    parts: list[dict[str, Any]] = []
    if from_start:
        parts.append({"conversation_id": {"$in": from_start}})
    parts.extend(
        {"conversation_id": cid, "seq": {"$gt": Int64(after)}}
        for cid, after in scope.items()
        if after > 0
    )
    return parts[0] if len(parts) == 1 else {"$or": parts}


class MongoSearch:
    def __init__(self, messages: AsyncCollection, clock: Clock | None = None) -> None:
        self._messages = messages
        self._clock = clock or SystemClock()

    async def create_index(self) -> None:
        await self._messages.create_index(
            [(SEARCH_FIELD, ASCENDING), ("_id", DESCENDING)], name=SEARCH_INDEX
        )

    async def search(
        self, scope: dict[str, int], terms: list[str], before_msg_id: int, limit: int
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {
            SEARCH_FIELD: {"$all": list(terms)},
            "recalled": {"$ne": True},
            **scope_filter(scope),
        }
        found: list[dict[str, Any]] = []
        budget = limit * SCAN_FACTOR + SCAN_EXTRA
        before = before_msg_id
        while len(found) < limit and budget > 0:
            page = min(budget, limit - len(found) + 10)
            if before > 0:
                query["_id"] = {"$lt": Int64(before)}
            cursor = self._messages.find(query).sort("_id", DESCENDING).limit(page)
            docs = [d async for d in cursor]
            budget -= len(docs)
            found.extend(
                d
                for d in docs
                if matches(terms, d.get("content_type", ""), bytes(d.get("body", b"")))
            )
            if len(docs) < page:
                break  # no more hits
            before = int(docs[-1]["_id"])
        return found[:limit]

    async def backfill(self, batch: int = BACKFILL_BATCH) -> int:
        """Fill search_terms of the documents stored without it (before search existed,
        or by a process of an older version during a rolling upgrade); returns how
        many. Idempotent, so several processes may run it at once.

        ``{search_terms: null}`` rather than ``$exists: false``: both select the
        documents without the field (never stored as null), but SecantusDB answers
        only the former from the search index and scans the whole collection for the
        latter. So with nothing to do, this is one index probe.

        Paced: after each full batch it pauses as long as the batch took, so it keeps
        the server busy half the time at most."""
        done = 0
        while True:
            started = self._clock.monotonic()
            cursor = self._messages.find({SEARCH_FIELD: None}, {"content_type": 1, "body": 1})
            docs = [d async for d in cursor.limit(batch)]
            if docs:
                result = await self._messages.bulk_write([_fill(d) for d in docs], ordered=False)
                done += result.modified_count
            if len(docs) < batch:
                break
            took = self._clock.monotonic() - started
            await self._clock.sleep(max(BACKFILL_MIN_PAUSE, took))
        if done:
            log.info("message search: indexed %d messages stored without search terms", done)
        return done


def _fill(doc: dict[str, Any]) -> UpdateOne:
    """The backfill's update of one document: unless another process filled it since."""
    fields = search_fields(doc.get("content_type", ""), bytes(doc.get("body", b"")))
    return UpdateOne({"_id": doc["_id"], SEARCH_FIELD: None}, {"$set": fields})
