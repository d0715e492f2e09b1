"""Group membership in SQL: adding, removing and promoting members under the
conversation's row lock, and reading who belongs to a conversation."""

from __future__ import annotations

import grpc
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from im.db import ConversationRow, MemberRow
from im.v1 import group_pb2
from services.group.privacy import PrivacyStore
from services.group.store_base import (
    ADMIN,
    GROUP,
    MANAGERS,
    MEMBER,
    OWNER,
    GroupError,
    StoreBase,
    _chunks,
    _conversations,
    _denied,
    _member,
    _member_row,
    _members,
    _not_found,
    _precondition,
    invalid,
)


class MemberStore(StoreBase):
    """Membership changes and member lists."""

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

    # --- member lists -------------------------------------------------------------
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

    def check_member(self, conversation_id: str, user_id: int) -> group_pb2.Member | None:
        with Session(self._engine) as session:
            row = session.get(MemberRow, (conversation_id, user_id))
            return _member(row) if row is not None else None

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
