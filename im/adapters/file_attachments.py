"""Attachments in a folder (standalone): one file per attachment, metadata and links
in a SQLite database beside them::

    <folder>/attachments.db        tables attachments, attachment_links
    <folder>/blobs/<id[:2]>/<id>   the bytes, written once
    <folder>/partial/<id>          an upload in progress (renamed into blobs/ when whole)

A file is renamed into place before its row is written, and a row without its file
is never written: a crash leaves at worst an orphan file, never a row that promises
bytes it does not have. Several processes may share the folder (SQLite WAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, func, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.exc import SQLAlchemyError

from im.attachments import CHUNK_BYTES, Digest, is_valid_attachment_id
from im.db import make_engine
from im.ports import AttachmentLink, AttachmentMeta, BackendUnavailable

BACKEND = "attachment store"
DB_FILE = "attachments.db"
T = TypeVar("T")

_schema = MetaData()
attachments = Table(
    "attachments",
    _schema,
    Column("id", String(32), primary_key=True),
    Column("owner_id", BigInteger, nullable=False),
    Column("filename", String(255), nullable=False),
    Column("content_type", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)
# A quota sums an owner's sizes. Created apart: create_all adds no index to a table
# that an earlier version created.
owner_index = Index("ix_attachments_owner", attachments.c.owner_id, attachments.c.size)
links_table = Table(
    "attachment_links",
    _schema,
    Column("attachment_id", String(32), primary_key=True),
    Column("conversation_id", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)


def _meta(row: object) -> AttachmentMeta:
    return AttachmentMeta(
        attachment_id=row.id,  # type: ignore[attr-defined]
        owner_id=row.owner_id,  # type: ignore[attr-defined]
        filename=row.filename,  # type: ignore[attr-defined]
        content_type=row.content_type,  # type: ignore[attr-defined]
        size=row.size,  # type: ignore[attr-defined]
        sha256=row.sha256,  # type: ignore[attr-defined]
        created_ms=row.created_ms,  # type: ignore[attr-defined]
    )


async def _fs(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A file operation off the event loop; a failing disk is the store unavailable."""
    try:
        return await asyncio.to_thread(call, *args, **kwargs)
    except OSError as exc:
        raise BackendUnavailable(BACKEND, f"{type(exc).__name__}: {exc}") from exc


class FileAttachmentStore:
    """AttachmentStore on a local (or shared) folder."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        (folder / "blobs").mkdir(mode=0o700, exist_ok=True)
        (folder / "partial").mkdir(mode=0o700, exist_ok=True)
        self._engine = make_engine(f"sqlite:///{(folder / DB_FILE).resolve()}")
        _schema.create_all(self._engine)
        owner_index.create(self._engine, checkfirst=True)

    def _blob(self, attachment_id: str) -> Path:
        return self._folder / "blobs" / attachment_id[:2] / attachment_id

    async def _db(self, work: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(work)
        except SQLAlchemyError as exc:
            raise BackendUnavailable(BACKEND, type(exc).__name__) from exc

    # ------------------------------------------------------------------ writes

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
        partial = self._folder / "partial" / attachment_id
        digest = Digest(chunks, max_bytes)
        try:
            await self._write(partial, digest)
            final = self._blob(attachment_id)
            await _fs(final.parent.mkdir, mode=0o700, exist_ok=True)
            await _fs(os.replace, partial, final)
        finally:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
        meta = AttachmentMeta(
            attachment_id, owner_id, filename, content_type, digest.size, digest.sha256, now_ms
        )
        try:
            await self._db(lambda: self._insert(meta))
        except BaseException:
            with contextlib.suppress(OSError):
                self._blob(attachment_id).unlink(missing_ok=True)
            raise
        return meta

    @staticmethod
    async def _write(path: Path, digest: Digest) -> None:
        handle = await _fs(open, path, "xb")
        try:
            # The source's own errors (a client that went away) pass as they are.
            async for chunk in digest:
                await _fs(handle.write, chunk)
            await _fs(handle.flush)
            await _fs(os.fsync, handle.fileno())
        finally:
            handle.close()

    def _insert(self, meta: AttachmentMeta) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                attachments.insert().values(
                    id=meta.attachment_id,
                    owner_id=meta.owner_id,
                    filename=meta.filename,
                    content_type=meta.content_type,
                    size=meta.size,
                    sha256=meta.sha256,
                    created_ms=meta.created_ms,
                )
            )

    async def link(self, links: list[AttachmentLink]) -> int:
        if not links:
            return 0
        return await self._db(lambda: self._link(links))

    def _link(self, links: list[AttachmentLink]) -> int:
        ids = list({link.attachment_id for link in links})
        with self._engine.begin() as conn:
            owners = dict(
                conn.execute(
                    select(attachments.c.id, attachments.c.owner_id).where(
                        attachments.c.id.in_(ids)
                    )
                ).all()
            )
            best: dict[tuple[str, str], int] = {}
            for link in links:
                if owners.get(link.attachment_id) != link.sender_id:
                    continue  # not the sender's file: the message shares nothing
                key = (link.attachment_id, link.conversation_id)
                best[key] = max(best.get(key, 0), link.seq)
            for (attachment_id, conversation_id), seq in best.items():
                statement = insert(links_table).values(
                    attachment_id=attachment_id, conversation_id=conversation_id, seq=seq
                )
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["attachment_id", "conversation_id"],
                        set_={"seq": func.max(links_table.c.seq, statement.excluded.seq)},
                    )
                )
        return len(best)

    # ------------------------------------------------------------------- reads

    async def meta(self, attachment_id: str) -> AttachmentMeta | None:
        def query() -> AttachmentMeta | None:
            with self._engine.connect() as conn:
                row = conn.execute(
                    select(attachments).where(attachments.c.id == attachment_id)
                ).first()
            return None if row is None else _meta(row)

        return await self._db(query)

    async def usage(self, owner_id: int) -> int:
        def query() -> int:
            with self._engine.connect() as conn:
                total = conn.execute(
                    select(func.coalesce(func.sum(attachments.c.size), 0)).where(
                        attachments.c.owner_id == owner_id
                    )
                ).scalar_one()
            return int(total)

        return await self._db(query)

    async def read(self, attachment_id: str) -> AsyncIterator[bytes]:
        handle = await _fs(open, self._blob(attachment_id), "rb")
        try:
            while chunk := await _fs(handle.read, CHUNK_BYTES):
                yield chunk
        finally:
            handle.close()

    async def links(self, attachment_id: str, limit: int) -> dict[str, int]:
        def query() -> dict[str, int]:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(links_table.c.conversation_id, links_table.c.seq)
                    .where(links_table.c.attachment_id == attachment_id)
                    .limit(limit)
                ).all()
            return {conversation_id: seq for conversation_id, seq in rows}

        return await self._db(query)

    # --------------------------------------------------------------- lifecycle

    async def healthy(self) -> bool:
        return self._folder.is_dir()

    async def close(self) -> None:
        self._engine.dispose()
