"""Message store on SQL (SQLAlchemy): the standalone default, any SQLAlchemy URL.

Also the dead-letter store (``dead_letters`` table) next to the messages, and message
search on the index of migration 0008_search (``im.adapters.sql_search``).

Errors: every client error leaves as ``BackendUnavailable``, except on insert_many,
where a row the database refuses by itself is ``RecordRejected``, a stored msg_id
``AlreadyStored`` and a seq held by another message ``SeqConflict``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, func, or_, select, text, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from im.adapters import event_plan
from im.adapters.sql_search import SqlSearch
from im.db import (
    DEAD_LETTER_REASON_CHARS,
    DeadLetterRow,
    MessageRow,
    create_schema,
    make_engine,
)
from im.events import EDIT, ERASED
from im.ports import AlreadyStored, BackendUnavailable, DeadLetter, RecordRejected, SeqConflict
from im.v1 import wire_pb2

BACKEND = "message store"

# Bounds for the MySQL drivers (PyMySQL, mysqlclient) when the URL sets none: without
# them a hung server (not a dead one: that refuses at once) blocks a call forever.
_MYSQL_TIMEOUTS = {"connect_timeout": "5", "read_timeout": "30", "write_timeout": "30"}

# Errors of one row's values: the database (DataError: too long, out of range) or the
# driver before sending (sqlite3: OverflowError for ints past 64 bits; a string the
# connection charset cannot encode: UnicodeEncodeError, a ValueError).
_ROW_ERRORS = (DataError, OverflowError, ValueError)

T = TypeVar("T")
ERASE_PAGE = 1000  # messages per transaction of erase_sender


def _to_row(m: wire_pb2.Message) -> dict[str, Any]:
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
        "refers_to": m.refers_to or None,
        "edited_at": m.edited_at,
        "recalled": m.recalled,
        "attachment_ids": " ".join(m.attachment_ids),
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
        refers_to=r.refers_to or 0,
        edited_at=r.edited_at,
        recalled=r.recalled,
        attachment_ids=(r.attachment_ids or "").split(),
    )


def _write_changes(connection: Connection, changes: list[event_plan.Change]) -> None:
    """``changes`` in at most four statements, one per kind, not one per change. The
    end state is the same as one by one: edits go first, in their order (the last of a
    target wins), and a target's recall is planned after all its edits (an edit after
    it is an EraseEvent); the rest only empties bodies."""
    table = MessageRow.__table__
    edits = [c for c in changes if isinstance(c, event_plan.Edit)]
    recalls = [c for c in changes if isinstance(c, event_plan.Recall)]
    erased = [c.msg_id for c in changes if isinstance(c, event_plan.EraseEvent)]
    if edits:
        connection.execute(
            update(table)
            .where(table.c.msg_id == bindparam("b_target"))
            .values(
                body=bindparam("b_body"),
                edited_at=bindparam("b_edited_at"),
                edit_seq=bindparam("b_edit_seq"),
            ),
            [
                {
                    "b_target": e.target,
                    "b_body": e.body,
                    "b_edited_at": e.edited_at,
                    "b_edit_seq": e.edit_seq,
                }
                for e in edits
            ],
        )
    if recalls:
        connection.execute(
            update(table)
            .where(table.c.msg_id.in_([r.target for r in recalls]))
            .values(recalled=True, body=b"", attachment_ids="")
        )
        # The edit events of each target in its own conversation (an OR of equalities
        # on refers_to: its index serves every term).
        connection.execute(
            update(table)
            .where(
                or_(
                    *(
                        and_(
                            table.c.refers_to == r.target,
                            table.c.conversation_id == r.conversation_id,
                        )
                        for r in recalls
                    )
                ),
                table.c.content_type == EDIT,
            )
            .values(body=b"")
        )
    if erased:
        connection.execute(update(table).where(table.c.msg_id.in_(erased)).values(body=b""))


def _letter_row(letter: DeadLetter) -> dict[str, Any]:
    # A dead letter is often a malformed record: cut what would not fit rather than
    # refuse to keep it (the reason is ours; topic and key come from the bus).
    return {
        "letter_id": letter.letter_id,
        "topic": letter.topic[:255],
        "partition": letter.partition,
        "offset": letter.offset,
        "key": letter.key[:255],
        "value": letter.value,
        "reason": letter.reason[:DEAD_LETTER_REASON_CHARS],
        "at_ms": letter.at_ms,
    }


def _to_letter(r: DeadLetterRow) -> DeadLetter:
    return DeadLetter(
        letter_id=r.letter_id,
        topic=r.topic,
        partition=r.partition,
        offset=r.offset,
        key=r.key,
        value=bytes(r.value),
        reason=r.reason,
        at_ms=r.at_ms,
    )


def _describe(exc: BaseException) -> str:
    """A short text for an error: the driver's own message, without SQLAlchemy's echo
    of the statement and its parameters (a 16 MiB body would be quoted)."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    return f"{type(cause).__name__}: {cause}"[:500]


def _with_timeouts(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_driver_name() not in ("pymysql", "mysqldb"):  # drivers with these options
        return url
    missing = {k: v for k, v in _MYSQL_TIMEOUTS.items() if k not in parsed.query}
    return parsed.update_query_dict(missing).render_as_string(hide_password=False)


class SqlMessageStore:
    """MessageStore and DeadLetterStore on one SQLAlchemy engine."""

    def __init__(
        self,
        url: str | None = None,
        engine: Engine | None = None,
        auto_migrate: bool = True,
        search_timeout: float | None = None,
    ) -> None:
        """``search_timeout``: seconds after which MySQL/MariaDB stop a search query
        (None: never)."""
        if engine is None:
            if url is None:
                raise ValueError("url or engine required")
            engine = make_engine(_with_timeouts(url))
        self._engine = engine
        # SQLite runs in this thread: its calls are local and short (a WAL commit does
        # not wait for the disk), and on a busy event loop the hop to a worker thread
        # and back cost more than the call itself (the router's store step took 2.5 ms
        # per batch through a thread, 0.8 ms inline). Only the router writes messages.
        self._inline = engine.dialect.name == "sqlite"
        if auto_migrate:
            try:
                create_schema(engine)
            except SQLAlchemyError as exc:
                raise BackendUnavailable(BACKEND, _describe(exc)) from exc
        self._search = SqlSearch(engine, search_timeout)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in a worker thread (the database driver blocks; SQLite inline);
        any error of the database client that ``fn`` let through means the store is not
        usable now."""
        try:
            if self._inline:
                return fn(*args)
            return await asyncio.to_thread(fn, *args)
        except SQLAlchemyError as exc:
            raise BackendUnavailable(BACKEND, _describe(exc)) from exc

    # ------------------------------------------------------------------ writes

    async def insert_many(self, messages: list[wire_pb2.Message]) -> None:
        if messages:
            await self._run(self._insert_many, [_to_row(m) for m in messages])

    def _insert_many(self, rows: list[dict[str, Any]]) -> None:
        # The common case: the whole batch in one transaction (a Core connection: the
        # ORM session costs a third more per batch and brings nothing to an insert).
        try:
            with self._engine.begin() as connection:
                connection.execute(MessageRow.__table__.insert(), rows)
            return
        except (IntegrityError, *_ROW_ERRORS):
            pass  # rolled back: nothing of the batch is stored
        # Some row collided or was refused: one transaction per row, in order, to store
        # exactly the rows before the first that cannot be stored, and to say why.
        for i, row in enumerate(rows):
            self._insert_one(i, row)

    def _insert_one(self, index: int, row: dict[str, Any]) -> None:
        try:
            with self._engine.begin() as connection:
                connection.execute(MessageRow.__table__.insert(), [row])
            return
        except IntegrityError:
            pass
        except _ROW_ERRORS as exc:
            raise RecordRejected(index, _describe(exc)) from exc
        # The msg_id decides whatever index the database names: if it is stored, this
        # is a replay (its seq may even differ); otherwise another message holds the seq.
        with Session(self._engine) as session:
            if session.get(MessageRow, row["msg_id"]) is not None:
                raise AlreadyStored(row["msg_id"], index)
        raise SeqConflict(row["conversation_id"], row["seq"], index)

    async def apply_events(self, events: list[wire_pb2.Message]) -> list[int]:
        if not events:
            return []
        return await self._run(self._apply_events, events)

    def _apply_events(self, events: list[wire_pb2.Message]) -> list[int]:
        # One transaction: a batch's events apply whole or not at all (then replayed).
        table = MessageRow.__table__
        with self._engine.begin() as connection:
            found = connection.execute(
                select(
                    table.c.msg_id,
                    table.c.conversation_id,
                    table.c.content_type,
                    table.c.recalled,
                    table.c.edit_seq,
                ).where(table.c.msg_id.in_(event_plan.targets_of(events)))
            )
            targets = {r[0]: event_plan.Target(*r) for r in found}
            changes, orphans = event_plan.plan(events, targets)
            _write_changes(connection, changes)
        return orphans

    async def put_dead_letters(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        # The same record twice in one call is stored once too.
        rows = list({letter.letter_id: _letter_row(letter) for letter in letters}.values())
        await self._run(self._put_dead_letters, rows)

    def _put_dead_letters(self, rows: list[dict[str, Any]]) -> None:
        # Portable "insert unless present": skip the ids already stored. Another
        # writer may store one of them in between: then look again, once.
        for attempt in range(2):
            try:
                with Session(self._engine) as session, session.begin():
                    ids = [r["letter_id"] for r in rows]
                    stored = set(
                        session.scalars(
                            select(DeadLetterRow.letter_id).where(DeadLetterRow.letter_id.in_(ids))
                        )
                    )
                    new = [r for r in rows if r["letter_id"] not in stored]
                    if new:
                        session.execute(DeadLetterRow.__table__.insert(), new)
                return
            except IntegrityError:
                if attempt == 1:
                    raise

    async def erase_sender(self, sender_id: int) -> int:
        erased = 0
        after = -1
        while True:
            # Page by primary key: each UPDATE locks only the rows it names, so the
            # router's inserts never wait behind a scan of the whole table.
            count, after = await self._run(self._erase_page, sender_id, after)
            erased += count
            if after < 0:
                return erased

    def _erase_page(self, sender_id: int, after: int) -> tuple[int, int]:
        """Erases the next ERASE_PAGE messages of the sender with msg_id > after;
        returns (how many changed, the last msg_id seen or -1 at the end)."""
        with self._engine.begin() as connection:
            ids = list(
                connection.scalars(
                    select(MessageRow.msg_id)
                    .where(MessageRow.sender_id == sender_id, MessageRow.msg_id > after)
                    .order_by(MessageRow.msg_id)
                    .limit(ERASE_PAGE)
                )
            )
            if not ids:
                return 0, -1
            changed = connection.execute(
                update(MessageRow)
                .where(MessageRow.msg_id.in_(ids), MessageRow.content_type != ERASED)
                .values(body=b"", content_type=ERASED, attachment_ids="")
            ).rowcount
        return changed, ids[-1]

    # ------------------------------------------------------------------- reads

    async def get_by_msg_ids(self, msg_ids: list[int]) -> dict[int, wire_pb2.Message]:
        if not msg_ids:
            return {}
        return await self._run(self._get_by_msg_ids, msg_ids)

    def _get_by_msg_ids(self, msg_ids: list[int]) -> dict[int, wire_pb2.Message]:
        with Session(self._engine) as session:
            rows = session.scalars(select(MessageRow).where(MessageRow.msg_id.in_(msg_ids)))
            return {r.msg_id: _to_message(r) for r in rows}

    async def last_seqs(self, conversation_ids: list[str]) -> dict[str, int]:
        if not conversation_ids:
            return {}
        return await self._run(self._last_seqs, conversation_ids)

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

    async def last_activity(self, conversation_ids: list[str]) -> dict[str, tuple[int, int]]:
        if not conversation_ids:
            return {}
        return await self._run(self._last_activity, conversation_ids)

    def _last_activity(self, conversation_ids: list[str]) -> dict[str, tuple[int, int]]:
        out = dict.fromkeys(conversation_ids, (0, 0))
        last = (
            select(MessageRow.conversation_id, func.max(MessageRow.seq).label("seq"))
            .where(MessageRow.conversation_id.in_(conversation_ids))
            .group_by(MessageRow.conversation_id)
            .subquery()
        )
        # The newest message of each: its (conversation_id, seq) is the unique index.
        stmt = select(MessageRow.conversation_id, MessageRow.seq, MessageRow.server_ts).join(
            last,
            and_(
                MessageRow.conversation_id == last.c.conversation_id,
                MessageRow.seq == last.c.seq,
            ),
        )
        with Session(self._engine) as session:
            for conv, seq, server_ts in session.execute(stmt):
                out[conv] = (int(seq), int(server_ts))
        return out

    async def history(
        self, conversation_id: str, after_seq: int, limit: int
    ) -> list[wire_pb2.Message]:
        return await self._run(self._history, conversation_id, after_seq, limit)

    def _history(self, conversation_id: str, after_seq: int, limit: int) -> list[wire_pb2.Message]:
        with Session(self._engine) as session:
            stmt = (
                select(MessageRow)
                .where(MessageRow.conversation_id == conversation_id, MessageRow.seq > after_seq)
                .order_by(MessageRow.seq)
                .limit(limit)
            )
            return [_to_message(r) for r in session.scalars(stmt)]

    async def search(
        self, scope: dict[str, int], terms: list[str], before_msg_id: int, limit: int
    ) -> list[wire_pb2.Message]:
        if not scope or not terms or limit <= 0:
            return []
        # Always in a worker thread, SQLite too: a search may read many index pages,
        # and the router's inline writes must not wait behind it on the event loop.
        # The caller bounds how many run at once (the gateway's SearchSlots).
        try:
            rows = await asyncio.to_thread(self._search.search, scope, terms, before_msg_id, limit)
        except SQLAlchemyError as exc:
            raise BackendUnavailable(BACKEND, _describe(exc)) from exc
        return [_to_message(r) for r in rows]

    async def dead_letters(self, limit: int, before_ms: int | None = None) -> list[DeadLetter]:
        if limit <= 0:
            return []
        return await self._run(self._dead_letters, limit, before_ms)

    def _dead_letters(self, limit: int, before_ms: int | None) -> list[DeadLetter]:
        stmt = select(DeadLetterRow)
        if before_ms is not None:
            stmt = stmt.where(DeadLetterRow.at_ms < before_ms)
        stmt = stmt.order_by(DeadLetterRow.at_ms.desc(), DeadLetterRow.letter_id.desc())
        with Session(self._engine) as session:
            return [_to_letter(r) for r in session.scalars(stmt.limit(limit))]

    # --------------------------------------------------------------- lifecycle

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
