"""Per-member cursors in SQL: ``delivered_seq`` and ``read_seq`` moved forward in
batches, read back, and the read receipts derived from them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from im.v1 import group_pb2
from services.group.store_base import StoreBase, _chunks, _member, _members


class CursorStore(StoreBase):
    """One cursor row per member, never one per message."""

    # --- receipts ------------------------------------------------------------------
    @staticmethod
    def _readers_filter(conversation_id: str, seq: int, exclude: int, read: bool) -> list:
        # Members who joined at or after seq never had the message: not counted.
        conditions = [
            _members.c.conversation_id == conversation_id,
            _members.c.joined_seq < seq,
            _members.c.read_seq >= seq if read else _members.c.read_seq < seq,
        ]
        if exclude:
            conditions.append(_members.c.user_id != exclude)
        return conditions

    def count_readers(self, conversation_id: str, seq: int, exclude: int) -> tuple[int, int]:
        with Session(self._engine) as session:
            self._require_exists(session, conversation_id)
            counts = []
            for read in (True, False):
                counts.append(
                    session.scalar(
                        select(func.count()).where(
                            *self._readers_filter(conversation_id, seq, exclude, read)
                        )
                    )
                    or 0
                )
        return counts[0], counts[1]

    def list_readers(
        self,
        conversation_id: str,
        seq: int,
        exclude: int,
        read: bool,
        after_user_id: int | None,
        limit: int,
    ) -> tuple[list[group_pb2.Member], str]:
        with Session(self._engine) as session:
            self._require_exists(session, conversation_id)
            stmt = (
                select(_members)
                .where(*self._readers_filter(conversation_id, seq, exclude, read))
                .order_by(_members.c.user_id)
                .limit(limit + 1)
            )
            if after_user_id is not None:
                stmt = stmt.where(_members.c.user_id > after_user_id)
            rows = session.execute(stmt).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return [_member(r) for r in rows], (str(rows[-1].user_id) if more else "")

    # --- cursors -----------------------------------------------------------------
    def update_cursors(
        self, targets: dict[tuple[str, int], tuple[int, int]], confirm: set[tuple[str, int]]
    ) -> tuple[int, list[group_pb2.CursorUpdate]]:
        """Moves (delivered_seq, read_seq) of each (conversation, user) forward only.

        ``targets`` is already coalesced: one entry per member, delivered >= read.
        Returns the number of member rows that changed, and of the ``confirm`` keys the
        read cursors now stored (the member exists and its read_seq equals the target).
        """
        # A fixed key order makes concurrent batches lock rows in the same order on
        # MySQL, so they cannot deadlock each other.
        params = [
            {"c": conversation_id, "u": user_id, "d": to_delivered, "r": to_read}
            for (conversation_id, user_id), (to_delivered, to_read) in sorted(targets.items())
        ]
        reads = {key: targets[key][1] for key in confirm if key in targets and targets[key][1]}
        with self._engine.begin() as connection:
            # One statement compiled once and sent as an executemany. CASE rather than
            # GREATEST(): SQLite has no GREATEST, and MAX(a, b) is SQLite-only. The
            # WHERE skips rows already at or past the target, so rowcount counts
            # real changes.
            result = connection.execute(_UPDATE_CURSORS, params)
            stored = _stored_reads(connection, reads) if reads else []
            return max(result.rowcount, 0), stored

    def get_cursors(self, conversation_id: str, user_ids: list[int]) -> list[group_pb2.Member]:
        with Session(self._engine) as session:
            self._require_exists(session, conversation_id)
            base = select(_members).where(_members.c.conversation_id == conversation_id)
            if not user_ids:
                rows = session.execute(base.order_by(_members.c.user_id)).all()
                return [_member(r) for r in rows]
            found: list[Any] = []
            for chunk in _chunks(user_ids):
                found += session.execute(base.where(_members.c.user_id.in_(chunk))).all()
            found.sort(key=lambda r: r.user_id)
            return [_member(r) for r in found]


def _stored_reads(
    connection: Any, reads: dict[tuple[str, int], int]
) -> list[group_pb2.CursorUpdate]:
    """The (conversation, user) -> read_seq pairs whose member row now holds exactly
    that read_seq: a read that moved a real member's cursor (now or earlier)."""
    by_conversation: dict[str, list[int]] = {}
    for conversation_id, user_id in reads:
        by_conversation.setdefault(conversation_id, []).append(user_id)
    stored = []
    for conversation_id, user_ids in by_conversation.items():
        for chunk in _chunks(user_ids):
            rows = connection.execute(
                select(_members.c.user_id, _members.c.read_seq).where(
                    _members.c.conversation_id == conversation_id,
                    _members.c.user_id.in_(chunk),
                )
            )
            for user_id, read_seq in rows:
                if read_seq == reads[(conversation_id, user_id)]:
                    stored.append(
                        group_pb2.CursorUpdate(
                            conversation_id=conversation_id, user_id=user_id, read_seq=read_seq
                        )
                    )
    return stored


_UPDATE_CURSORS = (
    update(_members)
    .where(
        _members.c.conversation_id == bindparam("c"),
        _members.c.user_id == bindparam("u"),
        or_(_members.c.delivered_seq < bindparam("d"), _members.c.read_seq < bindparam("r")),
    )
    .values(
        delivered_seq=case(
            (_members.c.delivered_seq < bindparam("d"), bindparam("d")),
            else_=_members.c.delivered_seq,
        ),
        read_seq=case(
            (_members.c.read_seq < bindparam("r"), bindparam("r")),
            else_=_members.c.read_seq,
        ),
    )
)
