"""Conversations in SQL: 1:1 pairs made on first use, groups created with their
first members; reading one, a user's list, whether a group is dissolved."""

from __future__ import annotations

import logging

import grpc
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from im.db import ConversationRow, MemberRow
from im.ids import direct_conversation_id, group_conversation_id
from im.v1 import group_pb2
from services.group.privacy import PrivacyStore
from services.group.store_base import (
    CREATE_ATTEMPTS,
    DIRECT,
    GROUP,
    MEMBER,
    OWNER,
    GroupError,
    StoreBase,
    _conversation,
    _conversations,
    _member,
    _member_row,
    _members,
    _not_found,
)

log = logging.getLogger("im.group")


class ConversationStore(StoreBase):
    """Creating and reading conversations."""

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

    def is_dissolved(self, conversation_id: str) -> bool:
        with Session(self._engine) as session:
            return bool(
                session.scalar(
                    select(_conversations.c.dissolved_at).where(
                        _conversations.c.id == conversation_id
                    )
                )
            )
