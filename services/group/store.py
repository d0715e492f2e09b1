"""The group service's storage: conversations (1:1 pairs and groups), members and
their per-member cursors, on SQLAlchemy (MySQL or SQLite).

A member's cursors (``delivered_seq``, ``read_seq``) are one row per member, never
one per message: receipts are derived from them. Membership changes of one group are
serialised by locking the conversation row first (see ``GroupStore._lock``), which
keeps ``member_count`` and the size limit exact under concurrent requests on both
MySQL and SQLite.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import grpc
from sqlalchemy import bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from im.clock import Clock
from im.db import ConversationRow, MemberRow
from im.ids import (
    MsgIdGenerator,
    direct_conversation_id,
    group_conversation_id,
)
from im.sqlservice import ServiceError
from im.v1 import group_pb2
from services.group.privacy import PrivacyStore

log = logging.getLogger("im.group")

DIRECT = group_pb2.CONVERSATION_KIND_DIRECT
GROUP = group_pb2.CONVERSATION_KIND_GROUP
OWNER = group_pb2.MEMBER_ROLE_OWNER
ADMIN = group_pb2.MEMBER_ROLE_ADMIN
MEMBER = group_pb2.MEMBER_ROLE_MEMBER
MANAGERS = (OWNER, ADMIN)

MAX_NAME_CHARS = 255
MAX_SQL_INT = (1 << 63) - 1  # BIGINT columns: larger uint64 values cannot be stored
# Keys per IN (...) list: far below SQLite's bound-parameter limit, short for MySQL.
IN_CHUNK = 900
# Group ids are time-ordered and carry the replica's leased node id; should two ever
# meet anyway (a lease moved after a registry session loss), the primary key catches
# it and we draw again.
CREATE_ATTEMPTS = 5

_members = MemberRow.__table__
_conversations = ConversationRow.__table__


# Refusals carry their gRPC status; the shared wrapper turns them into aborts.
GroupError = ServiceError


def invalid(message: str) -> GroupError:
    return GroupError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _not_found(conversation_id: str) -> GroupError:
    return GroupError(grpc.StatusCode.NOT_FOUND, f"conversation {conversation_id!r} not found")


def _precondition(message: str) -> GroupError:
    return GroupError(grpc.StatusCode.FAILED_PRECONDITION, message)


def _denied(message: str) -> GroupError:
    return GroupError(grpc.StatusCode.PERMISSION_DENIED, message)


# ------------------------------------------------------------------ conversions


def _conversation(row: Any) -> group_pb2.Conversation:
    return group_pb2.Conversation(
        conversation_id=row.id,
        kind=row.kind,
        name=row.name,
        owner_id=row.owner_id,
        created_at=row.created_at,
        member_count=row.member_count,
        member_version=row.member_version or 0,
        history_visible=bool(row.history_visible),
        description=row.description or "",
        avatar=row.avatar or "",
        dissolved=bool(row.dissolved_at),
        dissolved_at=row.dissolved_at or 0,
        change_version=row.change_version or 0,
    )


def _member(row: Any) -> group_pb2.Member:
    """From an ORM MemberRow or a Core result row of the members table."""
    return group_pb2.Member(
        conversation_id=row.conversation_id,
        user_id=row.user_id,
        role=row.role,
        joined_seq=row.joined_seq,
        delivered_seq=row.delivered_seq,
        read_seq=row.read_seq,
        joined_at=row.joined_at,
    )


_T = TypeVar("_T")


def _chunks(values: Sequence[_T], size: int = IN_CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _member_row(
    conversation_id: str, user_id: int, role: int, at_seq: int, now: int
) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "user_id": user_id,
        "role": role,
        "joined_seq": at_seq,
        "delivered_seq": at_seq,
        "read_seq": at_seq,
        "joined_at": now,
    }


# ------------------------------------------------------------------------ store


class GroupStore:
    """Conversations and members in SQL. Every method blocks: run it in a thread.

    Methods return protobuf messages, so no ORM object outlives its session.
    """

    def __init__(
        self, engine: Engine, max_group_size: int, ids: MsgIdGenerator, clock: Clock
    ) -> None:
        self._engine = engine
        self._max_group_size = max_group_size
        self._ids = ids
        self._clock = clock

    # --- helpers ---------------------------------------------------------------
    def _lock(self, session: Session, conversation_id: str) -> ConversationRow:
        """The conversation, locked for the rest of the transaction.

        A no-op UPDATE rather than SELECT ... FOR UPDATE because it works everywhere:
        MySQL takes the row lock; SQLite (which ignores FOR UPDATE) takes its write
        lock before anything is read, so the reads that follow are current.
        """
        session.execute(
            update(_conversations)
            .where(_conversations.c.id == conversation_id)
            .values(member_count=_conversations.c.member_count)
        )
        row = session.get(ConversationRow, conversation_id)
        if row is None:
            raise _not_found(conversation_id)
        return row

    @staticmethod
    def _require_exists(session: Session, conversation_id: str) -> None:
        found = session.scalar(
            select(_conversations.c.id).where(_conversations.c.id == conversation_id)
        )
        if found is None:
            raise _not_found(conversation_id)

    @staticmethod
    def _member_ids_among(session: Session, conversation_id: str, user_ids: list[int]) -> set[int]:
        present: set[int] = set()
        for chunk in _chunks(user_ids):
            present.update(
                session.scalars(
                    select(_members.c.user_id).where(
                        _members.c.conversation_id == conversation_id,
                        _members.c.user_id.in_(chunk),
                    )
                )
            )
        return present

    def _check_size(self, total: int) -> None:
        if total > self._max_group_size:
            raise _precondition(
                f"a group may have at most {self._max_group_size} members ({total} requested)"
            )

    # --- conversations -----------------------------------------------------------
    def get_or_create_direct(self, user_a: int, user_b: int) -> group_pb2.Conversation:
        conversation_id = direct_conversation_id(user_a, user_b)
        existing = self.get_conversation(conversation_id, missing_ok=True)
        if existing is not None:
            return existing
        now = self._clock.wall_ms()
        low, high = sorted((user_a, user_b))
        try:
            with Session(self._engine) as session, session.begin():
                session.execute(
                    insert(_conversations),
                    [
                        {
                            "id": conversation_id,
                            "kind": DIRECT,
                            "name": "",
                            "owner_id": 0,
                            "created_at": now,
                            "member_count": 2,
                            "member_version": 1,
                            "history_visible": True,
                        }
                    ],
                )
                session.execute(
                    insert(_members),
                    [_member_row(conversation_id, uid, MEMBER, 0, now) for uid in (low, high)],
                )
        except IntegrityError:
            pass  # created concurrently by another request: theirs is as good as ours
        created = self.get_conversation(conversation_id, missing_ok=True)
        if created is None:  # pragma: no cover - only if it was deleted in between
            raise GroupError(grpc.StatusCode.ABORTED, "conversation creation raced; retry")
        return created

    def create_group(
        self, owner_id: int, name: str, member_ids: list[int], history_visible: bool = False
    ) -> group_pb2.Conversation:
        others = [uid for uid in dict.fromkeys(member_ids) if uid != owner_id]
        self._check_size(1 + len(others))
        now = self._clock.wall_ms()
        for _ in range(CREATE_ATTEMPTS):
            conversation_id = group_conversation_id(self._ids.next_id())
            row = {
                "id": conversation_id,
                "kind": GROUP,
                "name": name,
                "owner_id": owner_id,
                "created_at": now,
                "member_count": 1 + len(others),
                "member_version": 1,
                "history_visible": history_visible,
                "description": "",
                "avatar": "",
                "dissolved_at": 0,
                "change_version": 0,
            }
            members = [_member_row(conversation_id, owner_id, OWNER, 0, now)]
            members += [_member_row(conversation_id, uid, MEMBER, 0, now) for uid in others]
            try:
                with Session(self._engine) as session, session.begin():
                    PrivacyStore.refuse_uninvitable_in(session, owner_id, others)
                    session.execute(insert(_conversations), [row])
                    session.execute(insert(_members), members)
            except IntegrityError:
                log.warning("group id %s collided; drawing another", conversation_id)
                continue
            return _conversation(ConversationRow(**row))
        raise GroupError(grpc.StatusCode.ABORTED, "could not allocate a group id; retry")

    def get_conversation(
        self, conversation_id: str, missing_ok: bool = False
    ) -> group_pb2.Conversation | None:
        with Session(self._engine) as session:
            row = session.get(ConversationRow, conversation_id)
            if row is None:
                if missing_ok:
                    return None
                raise _not_found(conversation_id)
            return _conversation(row)

    # --- membership --------------------------------------------------------------
    def add_members(
        self, conversation_id: str, actor_id: int, user_ids: list[int], at_seq: int
    ) -> tuple[list[group_pb2.Member], int]:
        """The members added and the group's change_version (0: nobody was added)."""
        wanted = list(dict.fromkeys(user_ids))
        now = self._clock.wall_ms()
        with Session(self._engine) as session, session.begin():
            conversation = self._lock(session, conversation_id)
            if conversation.kind != GROUP:
                raise _precondition("members can only be added to a group")
            if conversation.dissolved_at:
                raise _precondition("the group is dissolved")
            actor = session.get(MemberRow, (conversation_id, actor_id))
            if actor is None or actor.role not in MANAGERS:
                raise _denied("only the owner or an admin may add members")
            present = self._member_ids_among(session, conversation_id, wanted)
            PrivacyStore.refuse_uninvitable_in(
                session, actor_id, [uid for uid in wanted if uid not in present]
            )
            new_rows = [
                _member_row(conversation_id, uid, MEMBER, at_seq, now)
                for uid in wanted
                if uid not in present
            ]
            self._check_size(conversation.member_count + len(new_rows))
            version = 0
            if new_rows:
                version = (conversation.change_version or 0) + 1
                # One executemany: the drivers send it as multi-row inserts / one
                # prepared statement, so thousands of members take one round of I/O.
                session.execute(insert(_members), new_rows)
                session.execute(
                    update(_conversations)
                    .where(_conversations.c.id == conversation_id)
                    .values(
                        member_count=_conversations.c.member_count + len(new_rows),
                        member_version=_conversations.c.member_version + 1,
                        change_version=version,
                    )
                )
        # The row dicts are named like the Member fields.
        return [group_pb2.Member(**r) for r in new_rows], version

    def remove_member(
        self, conversation_id: str, actor_id: int, user_id: int
    ) -> tuple[group_pb2.Member, int]:
        """The member removed and the group's change_version. A dissolved group can
        still be left (a member drops it from their list), no one can be removed."""
        with Session(self._engine) as session, session.begin():
            conversation = self._lock(session, conversation_id)
            if conversation.kind != GROUP:
                raise _precondition("nobody can leave or be removed from a direct conversation")
            leaving = actor_id == user_id
            if conversation.dissolved_at and not leaving:
                raise _precondition("the group is dissolved")
            actor = None
            if not leaving:
                actor = session.get(MemberRow, (conversation_id, actor_id))
                if actor is None or actor.role not in MANAGERS:
                    raise _denied("only the owner or an admin may remove members")
            target = session.get(MemberRow, (conversation_id, user_id))
            if target is None:
                raise GroupError(
                    grpc.StatusCode.NOT_FOUND,
                    f"user {user_id} is not a member of {conversation_id!r}",
                )
            if target.role == OWNER:
                raise _precondition("the owner can neither leave nor be removed from the group")
            if actor is not None and target.role == ADMIN and actor.role != OWNER:
                raise _denied("only the owner may remove an admin")
            removed = _member(target)
            version = (conversation.change_version or 0) + 1
            session.execute(
                delete(_members).where(
                    _members.c.conversation_id == conversation_id,
                    _members.c.user_id == user_id,
                )
            )
            session.execute(
                update(_conversations)
                .where(_conversations.c.id == conversation_id)
                .values(
                    member_count=_conversations.c.member_count - 1,
                    member_version=_conversations.c.member_version + 1,
                    change_version=version,
                )
            )
        return removed, version

    def set_member_role(
        self, conversation_id: str, actor_id: int, user_id: int, role: int
    ) -> tuple[group_pb2.Member, int]:
        """The member and the group's change_version (0: the role was already so)."""
        if role not in (MEMBER, ADMIN):
            raise invalid("role must be MEMBER or ADMIN (ownership is not transferable here)")
        with Session(self._engine) as session, session.begin():
            conversation = self._lock(session, conversation_id)
            if conversation.kind != GROUP:
                raise _precondition("direct conversations have no roles")
            if conversation.dissolved_at:
                raise _precondition("the group is dissolved")
            actor = session.get(MemberRow, (conversation_id, actor_id))
            if actor is None or actor.role != OWNER:
                raise _denied("only the owner may change roles")
            target = session.get(MemberRow, (conversation_id, user_id))
            if target is None:
                raise GroupError(
                    grpc.StatusCode.NOT_FOUND,
                    f"user {user_id} is not a member of {conversation_id!r}",
                )
            if target.role == OWNER:
                raise _precondition("the owner's role cannot be changed")
            version = 0
            if target.role != role:
                target.role = role
                conversation.change_version = version = (conversation.change_version or 0) + 1
            session.flush()
            return _member(target), version

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

    def list_members(
        self, conversation_id: str, after_user_id: int | None, limit: int
    ) -> tuple[list[group_pb2.Member], str]:
        with Session(self._engine) as session:
            self._require_exists(session, conversation_id)
            stmt = (
                select(_members)
                .where(_members.c.conversation_id == conversation_id)
                .order_by(_members.c.user_id)
            )
            if after_user_id is not None:
                stmt = stmt.where(_members.c.user_id > after_user_id)
            if limit:
                stmt = stmt.limit(limit + 1)  # one extra row says whether a page follows
            rows = session.execute(stmt).all()
        more = bool(limit) and len(rows) > limit
        if more:
            rows = rows[:limit]
        next_cursor = str(rows[-1].user_id) if more else ""
        return [_member(r) for r in rows], next_cursor

    def list_member_ids(
        self, conversation_id: str, known_version: int = 0
    ) -> group_pb2.ListMemberIdsResponse:
        with Session(self._engine) as session:
            version = session.scalar(
                select(_conversations.c.member_version).where(
                    _conversations.c.id == conversation_id
                )
            )
            if version is None:
                raise _not_found(conversation_id)
            if known_version and version == known_version:
                return group_pb2.ListMemberIdsResponse(member_version=version, unchanged=True)
            rows = session.execute(
                select(_members.c.user_id, _members.c.joined_seq)
                .where(_members.c.conversation_id == conversation_id)
                .order_by(_members.c.user_id)
            ).all()
        return group_pb2.ListMemberIdsResponse(
            user_ids=[r[0] for r in rows],
            joined_seqs=[r[1] for r in rows],
            member_version=version,
        )

    def list_user_conversations(self, user_id: int) -> list[group_pb2.UserConversation]:
        with Session(self._engine) as session:
            rows = session.execute(
                select(ConversationRow, MemberRow)
                .join(MemberRow, MemberRow.conversation_id == ConversationRow.id)
                .where(MemberRow.user_id == user_id)
                .order_by(ConversationRow.id)
            ).all()
            return [
                group_pb2.UserConversation(conversation=_conversation(c), member=_member(m))
                for c, m in rows
            ]

    def check_member(self, conversation_id: str, user_id: int) -> group_pb2.Member | None:
        with Session(self._engine) as session:
            row = session.get(MemberRow, (conversation_id, user_id))
            return _member(row) if row is not None else None

    def is_dissolved(self, conversation_id: str) -> bool:
        with Session(self._engine) as session:
            return bool(
                session.scalar(
                    select(_conversations.c.dissolved_at).where(
                        _conversations.c.id == conversation_id
                    )
                )
            )

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

    def member_of(self, user_id: int, conversation_ids: list[str]) -> list[str]:
        """Those of ``conversation_ids`` the user belongs to."""
        with Session(self._engine) as session:
            found: list[str] = []
            for chunk in _chunks(conversation_ids):
                found += session.scalars(
                    select(_members.c.conversation_id).where(
                        _members.c.user_id == user_id, _members.c.conversation_id.in_(chunk)
                    )
                ).all()
            return found

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
