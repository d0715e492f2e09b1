"""Message store on MongoDB (pymongo's AsyncMongoClient): the distributed default.

One document per message, never one per member::

    {_id: msg_id (Int64), conversation_id, seq (Int64), sender_id (Int64), sender_device,
     client_msg_id, content_type, body (binary), server_ts (Int64),
     attachment_ids (strings; only when there are some), search_terms}

plus, only where they are set: ``refers_to`` (Int64, events), ``edited_at`` (Int64),
``recalled`` (bool) and ``edit_seq`` (Int64, the seq of the edit applied last). A
partial index on (refers_to) holds the events only: a recall finds its target's edits.

A unique index on (conversation_id, seq) serves history and last_seqs and guards the
gap-free sequence: two different messages can never hold the same seq. Search is a
keyword index over ``search_terms`` (``im.adapters.mongo_search`` says why not $text).
Only the unique index is in place before the first call goes ahead; the others are
built in the background (``im.adapters.mongo_indexes`` says why).

Dead letters live in the ``dead_letters`` collection of the same database::

    {_id: letter_id, topic, partition, offset (Int64), key, value (binary), reason,
     at_ms (Int64)}

Writes are acknowledged by a majority, journaled, unless the URL (or the client passed
in) sets its own write concern. Every client error leaves as ``BackendUnavailable``,
except on insert_many, where a document the store refuses by itself is
``RecordRejected``, a stored msg_id ``AlreadyStored`` and a seq held by another
message ``SeqConflict``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl

import bson
from bson import Int64
from bson.errors import BSONError
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, PyMongoError

from im.adapters import event_plan
from im.adapters.mongo_events import target_of, writes_of
from im.adapters.mongo_indexes import Upkeep, build_speed_indexes, create_seq_index
from im.adapters.mongo_search import MongoSearch, search_fields
from im.clock import Clock, SystemClock
from im.events import ERASED
from im.ports import AlreadyStored, BackendUnavailable, DeadLetter, RecordRejected, SeqConflict
from im.v1 import wire_pb2

BACKEND = "message store"

# Durable before progress: the router moves on only past what a majority journaled.
DURABLE = WriteConcern(w="majority", j=True)

# Bounds used when the URL sets none, so a dead or hung server fails a call within
# seconds instead of pymongo's 30 s server selection and no socket timeout at all.
_DEFAULT_TIMEOUTS_MS = {
    "serverSelectionTimeoutMS": 5000,
    "connectTimeoutMS": 5000,
    "socketTimeoutMS": 5000,
}

# MongoDB's document limit (maxBsonObjectSize). Checked before sending: a real server
# may fail a whole insert command (not the one document) on a larger one.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024

# Same length as the SQL store's column, so both keep the same text.
REASON_CHARS = 1024

_DUPLICATE_KEY = 11000
_INDEX_IN_ERRMSG = re.compile(r"index: (\S+)")

# Write errors that are about the server, not the document (pymongo retries the
# same codes): the batch is to be retried later, not the document set aside.
_TRANSIENT_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        50,  # MaxTimeMSExpired
        64,  # WriteConcernFailed
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)


def _to_doc(m: wire_pb2.Message) -> dict[str, Any]:
    doc = _base_doc(m)
    if m.attachment_ids:  # only where there are some: most messages carry none
        doc["attachment_ids"] = list(m.attachment_ids)
    return doc


def _base_doc(m: wire_pb2.Message) -> dict[str, Any]:
    return {
        "_id": Int64(m.msg_id),
        "conversation_id": m.conversation_id,
        "seq": Int64(m.seq),
        "sender_id": Int64(m.sender_id),
        "sender_device": m.sender_device,
        "client_msg_id": m.client_msg_id,
        "content_type": m.content_type,
        "body": bytes(m.body),
        "server_ts": Int64(m.server_ts),
        # Only where set: ordinary messages keep their documents (and indexes) lean.
        **({"refers_to": Int64(m.refers_to)} if m.refers_to else {}),
        **({"edited_at": Int64(m.edited_at)} if m.edited_at else {}),
        **({"recalled": True} if m.recalled else {}),
        **search_fields(m.content_type, m.body),
    }


def _to_message(d: dict[str, Any]) -> wire_pb2.Message:
    return wire_pb2.Message(
        msg_id=int(d["_id"]),
        conversation_id=d["conversation_id"],
        seq=int(d["seq"]),
        sender_id=int(d.get("sender_id", 0)),
        sender_device=d.get("sender_device", ""),
        client_msg_id=d.get("client_msg_id", ""),
        content_type=d.get("content_type", ""),
        body=bytes(d.get("body", b"")),
        server_ts=int(d.get("server_ts", 0)),
        refers_to=int(d.get("refers_to", 0)),
        edited_at=int(d.get("edited_at", 0)),
        recalled=bool(d.get("recalled", False)),
        attachment_ids=d.get("attachment_ids") or [],
    )


def _letter_doc(letter: DeadLetter) -> dict[str, Any]:
    return {
        "_id": letter.letter_id,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": Int64(letter.offset),
        "key": letter.key,
        "value": bytes(letter.value),
        "reason": letter.reason[:REASON_CHARS],
        "at_ms": Int64(letter.at_ms),
    }


def _to_letter(d: dict[str, Any]) -> DeadLetter:
    return DeadLetter(
        letter_id=d["_id"],
        topic=d["topic"],
        partition=int(d["partition"]),
        offset=int(d["offset"]),
        key=d["key"],
        value=bytes(d["value"]),
        reason=d["reason"],
        at_ms=int(d["at_ms"]),
    )


def _is_id_duplicate(error: dict[str, Any]) -> bool:
    """True when an E11000 write error names the _id index (a replay of msg_id)."""
    key_pattern = error.get("keyPattern")
    if key_pattern is not None:
        return list(key_pattern) == ["_id"]
    # Servers that omit keyPattern still name the index in the message.
    match = _INDEX_IN_ERRMSG.search(error.get("errmsg", ""))
    return match is not None and match.group(1) == "_id_"


def _describe(exc: BaseException) -> str:
    """A short text for an error. A BulkWriteError's own text quotes the documents
    (a 16 MiB body included): take the server's message only."""
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeConcernErrors") or exc.details.get("writeErrors") or [{}]
        text = errors[0].get("errmsg", "")
    else:
        text = str(exc)
    return f"{type(exc).__name__}: {text}"[:500]


@contextmanager
def _store_errors() -> Iterator[None]:
    """Any pymongo error not handled where it arose means the store is not usable now
    (unreachable, timed out, not primary, not majority-acknowledged, ...)."""
    try:
        yield
    except PyMongoError as exc:
        raise BackendUnavailable(BACKEND, _describe(exc)) from exc


def _url_options(url: str) -> set[str]:
    """The option names a MongoDB URL sets, lower-cased (URL options are
    case-insensitive; old URLs separate them with ';')."""
    query = url.partition("?")[2].replace(";", "&")
    return {name.lower() for name, _ in parse_qsl(query)}


def _first_unstorable(docs: list[dict[str, Any]]) -> tuple[int, str] | None:
    """(index, reason) of the first document MongoDB cannot hold, found by encoding
    it as pymongo will: ints past 64 bits, anything over the document limit."""
    for i, doc in enumerate(docs):
        try:
            size = len(bson.encode(doc))
        except (BSONError, OverflowError) as exc:
            return i, f"{type(exc).__name__}: {exc}"
        if size > MAX_DOCUMENT_BYTES:
            return i, f"document of {size} bytes, over MongoDB's {MAX_DOCUMENT_BYTES}"
    return None


def _write_error(failure: BulkWriteError) -> dict[str, Any]:
    """The one write error of an ordered insert that stopped. An unconfirmed write
    concern or a server in transition is the store's trouble, not the document's."""
    details = failure.details
    errors = details.get("writeErrors") or []
    if details.get("writeConcernErrors") or not errors:
        raise BackendUnavailable(BACKEND, _describe(failure)) from failure
    error = errors[0]
    if error.get("code") in _TRANSIENT_CODES:
        raise BackendUnavailable(BACKEND, _describe(failure)) from failure
    return error


class MongoMessageStore:
    """MessageStore and DeadLetterStore on one MongoDB database."""

    def __init__(
        self,
        url: str = "mongodb://127.0.0.1:27017/im",
        *,
        database: str | None = None,
        collection: str = "messages",
        dead_letter_collection: str = "dead_letters",
        client: AsyncMongoClient | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``database`` overrides the URL's path (default "im")."""
        if client is None:
            given = _url_options(url)
            defaults = {k: v for k, v in _DEFAULT_TIMEOUTS_MS.items() if k.lower() not in given}
            client = AsyncMongoClient(url, **defaults)
        self._client: AsyncMongoClient = client
        db = self._client[database] if database else self._client.get_default_database(default="im")
        # None: inherit the write concern the URL (or the client) chose.
        write_concern = DURABLE if self._client.write_concern.is_server_default else None
        self._messages: AsyncCollection = db.get_collection(collection, write_concern=write_concern)
        self._letters: AsyncCollection = db.get_collection(
            dead_letter_collection, write_concern=write_concern
        )
        self._clock = clock or SystemClock()
        self._search = MongoSearch(self._messages, self._clock)
        self._upkeep = Upkeep(self._build_indexes, self._search.backfill, self._clock)
        self._indexed = False
        self._index_lock = asyncio.Lock()

    @property
    def collection(self) -> AsyncCollection:
        return self._messages

    @property
    def dead_letter_collection(self) -> AsyncCollection:
        return self._letters

    async def _ready(self) -> None:
        # Created on first use: constructors cannot await. createIndexes is a no-op
        # when the index exists, so concurrent processes are fine.
        if self._indexed:
            return
        async with self._index_lock:
            if not self._indexed:
                await create_seq_index(self._messages)
                self._indexed = True
                self._upkeep.start()

    async def _build_indexes(self) -> None:
        await build_speed_indexes(self._messages, self._letters, self._search)

    async def backfill_search(self) -> int:
        """Index the messages stored without search_terms, now; returns how many."""
        with _store_errors():
            await self._ready()
            await self._build_indexes()
            return await self._search.backfill()

    # ------------------------------------------------------------------ writes

    async def insert_many(self, messages: list[wire_pb2.Message]) -> None:
        if not messages:
            return
        docs = [_to_doc(m) for m in messages]
        unstorable = _first_unstorable(docs)
        storable = docs if unstorable is None else docs[: unstorable[0]]
        with _store_errors():
            await self._ready()
            await self._insert_in_order(storable)
        if unstorable is not None:
            raise RecordRejected(*unstorable)

    async def _insert_in_order(self, docs: list[dict[str, Any]]) -> None:
        """Insert ``docs`` in order (ordered=True: nothing after a failure is tried)."""
        if not docs:
            return
        try:
            await self._messages.insert_many(docs, ordered=True)
        except BulkWriteError as failure:
            error = _write_error(failure)
            index = error["index"]
            await self._stopped_at(index, docs[index], error)

    async def _stopped_at(self, index: int, doc: dict[str, Any], error: dict[str, Any]) -> None:
        """Raises why the insert stopped at ``doc``."""
        if error.get("code") != _DUPLICATE_KEY:
            raise RecordRejected(index, error.get("errmsg", f"write error {error.get('code')}"))
        if _is_id_duplicate(error):
            raise AlreadyStored(int(doc["_id"]), index)
        # A document colliding on both indexes may be reported under either of them
        # (SecantusDB names the seq index first). As in the SQL store, the msg_id
        # decides: if it is stored, this is a replay; otherwise another message holds
        # the seq.
        if await self._messages.find_one({"_id": doc["_id"]}, {"_id": 1}) is not None:
            raise AlreadyStored(int(doc["_id"]), index)
        raise SeqConflict(doc["conversation_id"], int(doc["seq"]), index)

    async def apply_events(self, events: list[wire_pb2.Message]) -> list[int]:
        if not events:
            return []
        fields = {"conversation_id": 1, "content_type": 1, "recalled": 1, "edit_seq": 1}
        with _store_errors():
            await self._ready()
            ids = [Int64(i) for i in event_plan.targets_of(events)]
            cursor = self._messages.find({"_id": {"$in": ids}}, fields)
            targets = {int(d["_id"]): target_of(d) async for d in cursor}
            changes, orphans = event_plan.plan(events, targets)
            writes = [w for change in changes for w in writes_of(change)]
            if writes:
                # Ordered: a failure leaves a prefix applied, which a replay completes.
                await self._messages.bulk_write(writes, ordered=True)
        return orphans

    async def put_dead_letters(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        with _store_errors():
            await self._ready()
            try:
                # ordered=False: a letter stored before does not hold back the others.
                await self._letters.insert_many([_letter_doc(x) for x in letters], ordered=False)
            except BulkWriteError as failure:
                details = failure.details
                if details.get("writeConcernErrors") or any(
                    e.get("code") != _DUPLICATE_KEY for e in details.get("writeErrors", [])
                ):
                    raise
                # Only duplicates: those letters are stored already, as they stand.

    async def erase_sender(self, sender_id: int) -> int:
        with _store_errors():
            await self._ready()
            result = await self._messages.update_many(
                {"sender_id": Int64(sender_id), "content_type": {"$ne": ERASED}},
                {
                    "$set": {"body": b"", "content_type": ERASED, **search_fields(ERASED, b"")},
                    "$unset": {"attachment_ids": ""},
                },
            )
        return int(result.modified_count)

    # ------------------------------------------------------------------- reads

    async def get_by_msg_ids(self, msg_ids: list[int]) -> dict[int, wire_pb2.Message]:
        if not msg_ids:
            return {}
        with _store_errors():
            await self._ready()
            cursor = self._messages.find({"_id": {"$in": [Int64(i) for i in msg_ids]}})
            return {int(d["_id"]): _to_message(d) async for d in cursor}

    async def last_seqs(self, conversation_ids: list[str]) -> dict[str, int]:
        if not conversation_ids:
            return {}
        out = dict.fromkeys(conversation_ids, 0)
        # One aggregate for all conversations. $sort in the index's (reverse) order
        # followed by $group/$first lets MongoDB answer with a DISTINCT_SCAN: one index
        # probe per conversation, not a scan of its messages.
        pipeline: list[dict[str, Any]] = [
            {"$match": {"conversation_id": {"$in": list(out)}}},
            {"$sort": {"conversation_id": -1, "seq": -1}},
            {"$group": {"_id": "$conversation_id", "seq": {"$first": "$seq"}}},
        ]
        with _store_errors():
            await self._ready()
            async for row in await self._messages.aggregate(pipeline):
                out[row["_id"]] = int(row["seq"])
        return out

    async def last_activity(self, conversation_ids: list[str]) -> dict[str, tuple[int, int]]:
        if not conversation_ids:
            return {}
        out = dict.fromkeys(conversation_ids, (0, 0))
        # As last_seqs: one DISTINCT_SCAN-friendly aggregate, the newest message's
        # server_ts taken along.
        pipeline: list[dict[str, Any]] = [
            {"$match": {"conversation_id": {"$in": list(out)}}},
            {"$sort": {"conversation_id": -1, "seq": -1}},
            {
                "$group": {
                    "_id": "$conversation_id",
                    "seq": {"$first": "$seq"},
                    "server_ts": {"$first": "$server_ts"},
                }
            },
        ]
        with _store_errors():
            await self._ready()
            async for row in await self._messages.aggregate(pipeline):
                out[row["_id"]] = (int(row["seq"]), int(row.get("server_ts") or 0))
        return out

    async def history(
        self, conversation_id: str, after_seq: int, limit: int
    ) -> list[wire_pb2.Message]:
        if limit <= 0:  # Mongo's limit(0) would mean "no limit"
            return []
        with _store_errors():
            await self._ready()
            cursor = (
                self._messages.find(
                    {"conversation_id": conversation_id, "seq": {"$gt": Int64(after_seq)}}
                )
                .sort("seq", ASCENDING)
                .limit(limit)
            )
            return [_to_message(d) async for d in cursor]

    async def search(
        self, scope: dict[str, int], terms: list[str], before_msg_id: int, limit: int
    ) -> list[wire_pb2.Message]:
        if not scope or not terms or limit <= 0:
            return []
        with _store_errors():
            await self._ready()
            docs = await self._search.search(scope, terms, before_msg_id, limit)
        return [_to_message(d) for d in docs]

    async def dead_letters(self, limit: int, before_ms: int | None = None) -> list[DeadLetter]:
        if limit <= 0:
            return []
        query: dict[str, Any] = {} if before_ms is None else {"at_ms": {"$lt": Int64(before_ms)}}
        with _store_errors():
            await self._ready()
            cursor = (
                self._letters.find(query)
                .sort([("at_ms", DESCENDING), ("_id", DESCENDING)])
                .limit(limit)
            )
            return [_to_letter(d) async for d in cursor]

    # --------------------------------------------------------------- lifecycle

    async def healthy(self, timeout: float = 2.0) -> bool:
        try:
            await asyncio.wait_for(self._client.admin.command("ping"), timeout)
            return True
        except Exception:
            return False

    async def close(self) -> None:
        await self._upkeep.stop()
        await self._client.close()
