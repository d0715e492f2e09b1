"""What the parts of the group service's storage share: kinds, roles and limits, the
refusals they raise, rows as protobuf messages, and ``StoreBase`` with the engine and
the helpers of every ``GroupStore`` part."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import grpc
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from im.clock import Clock
from im.db import ConversationRow, MemberRow
from im.ids import MsgIdGenerator
from im.sqlservice import ServiceError
from im.v1 import group_pb2

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


class StoreBase:
    """The engine, limits, id generator and clock of a ``GroupStore``, and the helpers
    its parts (conversations, members, cursors) have in common."""

    def __init__(
        self, engine: Engine, max_group_size: int, ids: MsgIdGenerator, clock: Clock
    ) -> None:
        self._engine = engine
        self._max_group_size = max_group_size
        self._ids = ids
        self._clock = clock

    # --- helpers ---------------------------------------------------------------
    @staticmethod
    def _require_exists(session: Session, conversation_id: str) -> None:
        found = session.scalar(
            select(_conversations.c.id).where(_conversations.c.id == conversation_id)
        )
        if found is None:
            raise _not_found(conversation_id)

    def _check_size(self, total: int) -> None:
        if total > self._max_group_size:
            raise _precondition(
                f"a group may have at most {self._max_group_size} members ({total} requested)"
            )
