"""Message store on SQL (SQLAlchemy): the standalone default, any SQLAlchemy URL."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from im.db import MessageRow, create_schema, make_engine
from im.ports import SeqConflict
from im.v1 import wire_pb2


def _to_row(m: wire_pb2.Message) -> dict:
    return {
        "msg_id": m.msg_id,
        "conversation_id": m.conversation_id,
        "seq": m.seq,
        "sender_id": m.sender_id,
        "sender_device": m.sender_device,
        "client_msg_id": m.client_msg_id,
        "content_type": m.content_type,
        "body": m.body,
        "server_ts": m.server_ts,
    }


def _to_message(r: MessageRow) -> wire_pb2.Message:
    return wire_pb2.Message(
        msg_id=r.msg_id,
        conversation_id=r.conversation_id,
        seq=r.seq,
        sender_id=r.sender_id,
        sender_device=r.sender_device,
        client_msg_id=r.client_msg_id,
        content_type=r.content_type,
        body=r.body,
        server_ts=r.server_ts,
    )


class SqlMessageStore:
    def __init__(
        self, url: str | None = None, engine: Engine | None = None, auto_migrate: bool = True
    ) -> None:
        if engine is None:
            if url is None:
                raise ValueError("url or engine required")
            engine = make_engine(url)
        self._engine = engine
        if auto_migrate:
            create_schema(engine)

    # Every call runs in a worker thread: the database driver blocks.
    async def insert_many(self, messages: list[wire_pb2.Message]) -> list[bool]:
        return await asyncio.to_thread(self._insert_many, messages)

    def _insert_many(self, messages: list[wire_pb2.Message]) -> list[bool]:
        if not messages:
            return []
        rows = [_to_row(m) for m in messages]
        try:
            with Session(self._engine) as session, session.begin():
                session.execute(MessageRow.__table__.insert(), rows)
            return [True] * len(rows)
        except IntegrityError:
            pass
        # Some row collided: insert one by one to tell replays from seq conflicts.
        results = []
        for row in rows:
            try:
                with Session(self._engine) as session, session.begin():
                    session.execute(MessageRow.__table__.insert(), [row])
                results.append(True)
            except IntegrityError:
                with Session(self._engine) as session:
                    exists = session.get(MessageRow, row["msg_id"])
                if exists is None:
                    raise SeqConflict(row["conversation_id"], row["seq"]) from None
                results.append(False)
        return results

    async def get_by_msg_ids(self, msg_ids: list[int]) -> dict[int, wire_pb2.Message]:
        if not msg_ids:
            return {}
        return await asyncio.to_thread(self._get_by_msg_ids, msg_ids)

    def _get_by_msg_ids(self, msg_ids: list[int]) -> dict[int, wire_pb2.Message]:
        with Session(self._engine) as session:
            rows = session.scalars(select(MessageRow).where(MessageRow.msg_id.in_(msg_ids)))
            return {r.msg_id: _to_message(r) for r in rows}

    async def last_seqs(self, conversation_ids: list[str]) -> dict[str, int]:
        if not conversation_ids:
            return {}
        return await asyncio.to_thread(self._last_seqs, conversation_ids)

    def _last_seqs(self, conversation_ids: list[str]) -> dict[str, int]:
        out = dict.fromkeys(conversation_ids, 0)
        with Session(self._engine) as session:
            stmt = (
                select(MessageRow.conversation_id, func.max(MessageRow.seq))
                .where(MessageRow.conversation_id.in_(conversation_ids))
                .group_by(MessageRow.conversation_id)
            )
            for conv, seq in session.execute(stmt):
                out[conv] = int(seq or 0)
        return out

    async def history(
        self, conversation_id: str, after_seq: int, limit: int
    ) -> list[wire_pb2.Message]:
        return await asyncio.to_thread(self._history, conversation_id, after_seq, limit)

    def _history(self, conversation_id: str, after_seq: int, limit: int) -> list[wire_pb2.Message]:
        with Session(self._engine) as session:
            stmt = (
                select(MessageRow)
                .where(MessageRow.conversation_id == conversation_id, MessageRow.seq > after_seq)
                .order_by(MessageRow.seq)
                .limit(limit)
            )
            return [_to_message(r) for r in session.scalars(stmt)]

    async def healthy(self) -> bool:
        def ping() -> bool:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True

        try:
            return await asyncio.to_thread(ping)
        except Exception:
            return False

    async def close(self) -> None:
        self._engine.dispose()
