"""Attachments in MongoDB GridFS (distributed mode), in the message store's database::

    attachments.files    {_id: attachment id, filename, length, chunkSize, uploadDate,
                          sha256, metadata: {owner_id (Int64), content_type, created_ms}}
    attachments.chunks   GridFS chunks (255 KiB each), written as the upload streams in
    attachment_links     {_id: "<attachment id> <conversation id>", attachment_id,
                          conversation_id, seq (Int64): the highest linking seq}

GridFS writes the files document last (on close), so a half-written upload is never
visible; a failed one is aborted (its chunks deleted). Writes use the store's durable
write concern (majority, journaled) unless the URL sets one. Every pymongo error
leaves as ``BackendUnavailable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from bson import Int64
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from im.adapters.mongo_store import _DEFAULT_TIMEOUTS_MS, DURABLE, _url_options
from im.attachments import Digest, is_valid_attachment_id
from im.ports import AttachmentLink, AttachmentMeta, BackendUnavailable

BACKEND = "attachment store"
BUCKET = "attachments"
LINKS = "attachment_links"
OWNER_INDEX = "owner_length"


def _meta(doc: dict[str, Any]) -> AttachmentMeta:
    extra = doc.get("metadata") or {}
    return AttachmentMeta(
        attachment_id=doc["_id"],
        owner_id=int(extra.get("owner_id", 0)),
        filename=doc.get("filename") or "",
        content_type=extra.get("content_type", ""),
        size=int(doc.get("length", 0)),
        sha256=doc.get("sha256", ""),
        created_ms=int(extra.get("created_ms", 0)),
    )


def _unavailable(exc: BaseException) -> BackendUnavailable:
    return BackendUnavailable(BACKEND, f"{type(exc).__name__}: {str(exc)[:300]}")


class GridFsAttachmentStore:
    """AttachmentStore on one MongoDB database."""

    def __init__(
        self,
        url: str = "mongodb://127.0.0.1:27017/im",
        *,
        database: str | None = None,
        client: AsyncMongoClient | None = None,
    ) -> None:
        if client is None:
            given = _url_options(url)
            defaults = {k: v for k, v in _DEFAULT_TIMEOUTS_MS.items() if k.lower() not in given}
            client = AsyncMongoClient(url, **defaults)
        self._client: AsyncMongoClient = client
        db: AsyncDatabase = (
            client[database] if database else client.get_default_database(default="im")
        )
        write_concern = DURABLE if client.write_concern.is_server_default else None
        db = db.with_options(write_concern=write_concern) if write_concern else db
        self._db = db
        self._bucket = AsyncGridFSBucket(db, bucket_name=BUCKET)
        self._files = db[f"{BUCKET}.files"]
        self._links = db[LINKS]
        self._owner_index = False  # created on the first usage()

    async def put(
        self,
        attachment_id: str,
        owner_id: int,
        filename: str,
        content_type: str,
        chunks: AsyncIterator[bytes],
        max_bytes: int,
        now_ms: int,
    ) -> AttachmentMeta:
        if not is_valid_attachment_id(attachment_id):
            raise ValueError("malformed attachment id")
        metadata = {
            "owner_id": Int64(owner_id),
            "content_type": content_type,
            "created_ms": Int64(now_ms),
        }
        digest = Digest(chunks, max_bytes)
        stream = self._bucket.open_upload_stream_with_id(attachment_id, filename, metadata=metadata)
        try:
            async for chunk in digest:
                await stream.write(chunk)
            await stream.set("sha256", digest.sha256)
            await stream.close()
        except BaseException as exc:
            try:
                await stream.abort()
            except PyMongoError:
                pass  # chunks left behind have no files document: never served
            if isinstance(exc, PyMongoError):
                raise _unavailable(exc) from exc
            raise
        return AttachmentMeta(
            attachment_id, owner_id, filename, content_type, digest.size, digest.sha256, now_ms
        )

    async def meta(self, attachment_id: str) -> AttachmentMeta | None:
        try:
            doc = await self._files.find_one({"_id": attachment_id})
        except PyMongoError as exc:
            raise _unavailable(exc) from exc
        return None if doc is None else _meta(doc)

    async def usage(self, owner_id: int) -> int:
        owner = {"metadata.owner_id": Int64(owner_id)}
        try:
            if not self._owner_index:
                # Covers the sum: an owner's files and their lengths, from the index.
                await self._files.create_index(
                    [("metadata.owner_id", 1), ("length", 1)], name=OWNER_INDEX
                )
                self._owner_index = True
            cursor = await self._files.aggregate(
                [{"$match": owner}, {"$group": {"_id": None, "total": {"$sum": "$length"}}}]
            )
            totals = [int(doc["total"]) async for doc in cursor]
        except PyMongoError as exc:
            raise _unavailable(exc) from exc
        return totals[0] if totals else 0

    async def read(self, attachment_id: str) -> AsyncIterator[bytes]:
        try:
            out = await self._bucket.open_download_stream(attachment_id)
            while chunk := await out.readchunk():
                yield chunk
        except NoFile as exc:
            raise BackendUnavailable(BACKEND, f"no file {attachment_id}") from exc
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    async def link(self, links: list[AttachmentLink]) -> int:
        if not links:
            return 0
        ids = list({link.attachment_id for link in links})
        try:
            owners = {
                doc["_id"]: int((doc.get("metadata") or {}).get("owner_id", 0))
                async for doc in self._files.find(
                    {"_id": {"$in": ids}}, {"_id": 1, "metadata.owner_id": 1}
                )
            }
            best: dict[tuple[str, str], int] = {}
            for link in links:
                if owners.get(link.attachment_id) != link.sender_id:
                    continue  # not the sender's file: the message shares nothing
                key = (link.attachment_id, link.conversation_id)
                best[key] = max(best.get(key, 0), link.seq)
            for (attachment_id, conversation_id), seq in best.items():
                await self._links.update_one(
                    {"_id": f"{attachment_id} {conversation_id}"},
                    {
                        "$max": {"seq": Int64(seq)},
                        "$setOnInsert": {
                            "attachment_id": attachment_id,
                            "conversation_id": conversation_id,
                        },
                    },
                    upsert=True,
                )
        except PyMongoError as exc:
            raise _unavailable(exc) from exc
        return len(best)

    async def links(self, attachment_id: str, limit: int) -> dict[str, int]:
        if limit <= 0:
            return {}
        try:
            # The _id starts with the attachment id: a range over the _id index.
            cursor = self._links.find(
                {"_id": {"$gt": f"{attachment_id} ", "$lt": f"{attachment_id}!"}}
            ).limit(limit)
            return {d["conversation_id"]: int(d["seq"]) async for d in cursor}
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    async def healthy(self, timeout: float = 2.0) -> bool:
        try:
            await asyncio.wait_for(self._client.admin.command("ping"), timeout)
            return True
        except Exception:
            return False

    async def close(self) -> None:
        await self._client.close()
