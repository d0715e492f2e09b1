"""Message store on MongoDB (pymongo's AsyncMongoClient): the distributed default.

One document per message, never one per member::

    {_id: msg_id (Int64), conversation_id, seq (Int64), sender_id (Int64), sender_device,
     client_msg_id, content_type, body (binary), server_ts (Int64)}

A unique index on (conversation_id, seq) serves history and last_seqs and guards the
gap-free sequence: two different messages can never hold the same seq.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from bson import Int64
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from im.ports import SeqConflict
from im.v1 import wire_pb2

SEQ_INDEX = "conversation_seq"
_DUPLICATE_KEY = 11000
_INDEX_IN_ERRMSG = re.compile(r"index: (\S+)")


def _to_doc(m: wire_pb2.Message) -> dict[str, Any]:
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
    )


def _is_id_duplicate(error: dict[str, Any]) -> bool:
    """True when an E11000 write error names the _id index (a replay of msg_id)."""
    key_pattern = error.get("keyPattern")
    if key_pattern is not None:
        return list(key_pattern) == ["_id"]
    # Servers that omit keyPattern still name the index in the message.
    match = _INDEX_IN_ERRMSG.search(error.get("errmsg", ""))
    return match is not None and match.group(1) == "_id_"


class MongoMessageStore:
    def __init__(
        self,
        url: str = "mongodb://127.0.0.1:27017/im",
        *,
        database: str | None = None,
        collection: str = "messages",
        client: AsyncMongoClient | None = None,
    ) -> None:
        """``database`` overrides the URL's path (default "im")."""
        self._client: AsyncMongoClient = client if client is not None else AsyncMongoClient(url)
        db = self._client[database] if database else self._client.get_default_database(default="im")
        self._messages: AsyncCollection = db[collection]
        self._indexed = False
        self._index_lock = asyncio.Lock()

    @property
    def collection(self) -> AsyncCollection:
        return self._messages

    async def _coll(self) -> AsyncCollection:
        # The index is created on first use: constructors cannot await. createIndexes
        # is a no-op when it already exists, so concurrent processes are fine.
        if not self._indexed:
            async with self._index_lock:
                if not self._indexed:
                    await self._messages.create_index(
                        [("conversation_id", ASCENDING), ("seq", ASCENDING)],
                        unique=True,
                        name=SEQ_INDEX,
                    )
                    self._indexed = True
        return self._messages

    async def insert_many(self, messages: list[wire_pb2.Message]) -> list[bool]:
        if not messages:
            return []
        coll = await self._coll()
        docs = [_to_doc(m) for m in messages]
        try:
            # ordered=False: everything that can be stored is stored, in one round trip.
            await coll.insert_many(docs, ordered=False)
            return [True] * len(docs)
        except BulkWriteError as exc:
            failure = exc
        details = failure.details
        if details.get("writeConcernErrors"):
            raise failure
        results = [True] * len(docs)
        ambiguous: list[int] = []  # (conversation_id, seq) taken: a replay or a conflict?
        for error in details.get("writeErrors", []):
            if error.get("code") != _DUPLICATE_KEY:
                raise failure
            i = error["index"]
            results[i] = False
            if not _is_id_duplicate(error):
                ambiguous.append(i)
        if ambiguous:
            # A document colliding on both indexes may be reported under either of them
            # (SecantusDB names the seq index first). As in the SQL store, the msg_id
            # decides: if it is stored, this is a replay; otherwise another message
            # holds the seq.
            ids = [docs[i]["_id"] for i in ambiguous]
            stored = {d["_id"] async for d in coll.find({"_id": {"$in": ids}}, {"_id": 1})}
            for i in ambiguous:
                if docs[i]["_id"] not in stored:
                    raise SeqConflict(docs[i]["conversation_id"], int(docs[i]["seq"]))
        return results

    async def get_by_msg_ids(self, msg_ids: list[int]) -> dict[int, wire_pb2.Message]:
        if not msg_ids:
            return {}
        coll = await self._coll()
        cursor = coll.find({"_id": {"$in": [Int64(i) for i in msg_ids]}})
        return {int(d["_id"]): _to_message(d) async for d in cursor}

    async def last_seqs(self, conversation_ids: list[str]) -> dict[str, int]:
        if not conversation_ids:
            return {}
        coll = await self._coll()
        out = dict.fromkeys(conversation_ids, 0)
        # One aggregate for all conversations. $sort in the index's (reverse) order
        # followed by $group/$first lets MongoDB answer with a DISTINCT_SCAN: one index
        # probe per conversation, not a scan of its messages.
        pipeline: list[dict[str, Any]] = [
            {"$match": {"conversation_id": {"$in": list(out)}}},
            {"$sort": {"conversation_id": -1, "seq": -1}},
            {"$group": {"_id": "$conversation_id", "seq": {"$first": "$seq"}}},
        ]
        async for row in await coll.aggregate(pipeline):
            out[row["_id"]] = int(row["seq"])
        return out

    async def history(
        self, conversation_id: str, after_seq: int, limit: int
    ) -> list[wire_pb2.Message]:
        if limit <= 0:  # Mongo's limit(0) would mean "no limit"
            return []
        coll = await self._coll()
        cursor = (
            coll.find({"conversation_id": conversation_id, "seq": {"$gt": Int64(after_seq)}})
            .sort("seq", ASCENDING)
            .limit(limit)
        )
        return [_to_message(d) async for d in cursor]

    async def healthy(self, timeout: float = 2.0) -> bool:
        try:
            await asyncio.wait_for(self._client.admin.command("ping"), timeout)
            return True
        except Exception:
            return False

    async def close(self) -> None:
        await self._client.close()
