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

from im.search import index_words, matches

log = logging.getLogger("im.mongo_store")

SEARCH_INDEX = "search_terms"
SEARCH_FIELD = "search_terms"
# The one-time fill of search_terms for documents stored before search existed.
BACKFILL_MARKER = "search_terms_backfill"
BACKFILL_BATCH = 500
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
    def __init__(self, messages: AsyncCollection, meta: AsyncCollection) -> None:
        self._messages = messages
        self._meta = meta

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
        """Fill search_terms of the documents stored without it; returns how many.
        Idempotent, so several processes may run it at once; once done, a marker
        document spares the next start the scan."""
        if await self._meta.find_one({"_id": BACKFILL_MARKER}) is not None:
            return 0
        done = 0
        while True:
            cursor = self._messages.find(
                {SEARCH_FIELD: {"$exists": False}}, {"content_type": 1, "body": 1}
            ).limit(batch)
            docs = [d async for d in cursor]
            if not docs:
                break
            await self._messages.bulk_write(
                [
                    UpdateOne(
                        {"_id": d["_id"], SEARCH_FIELD: {"$exists": False}},
                        {
                            "$set": search_fields(
                                d.get("content_type", ""), bytes(d.get("body", b""))
                            )
                        },
                    )
                    for d in docs
                ],
                ordered=False,
            )
            done += len(docs)
        await self._meta.update_one({"_id": BACKFILL_MARKER}, {"$set": {"done": True}}, upsert=True)
        if done:
            log.info("message search: indexed %d messages stored before it", done)
        return done
