"""The group service's storage: conversations (1:1 pairs and groups), members and
their per-member cursors, on SQLAlchemy (MySQL or SQLite).

A member's cursors (``delivered_seq``, ``read_seq``) are one row per member, never
one per message: receipts are derived from them. Membership changes of one group are
serialised by locking the conversation row first (see ``GroupStore._lock``), which
keeps ``member_count`` and the size limit exact under concurrent requests on both
MySQL and SQLite.

The store is composed of parts by area (``store_conversations``, ``store_members``,
``store_cursors``) over ``store_base``, which holds what they share.
"""

from __future__ import annotations

# Defined in store_base; the service, the lifecycle (which builds on the row helpers
# too) and tests import them from here.
from services.group.store_base import (
    ADMIN,
    CREATE_ATTEMPTS,
    DIRECT,
    GROUP,
    IN_CHUNK,
    MANAGERS,
    MAX_NAME_CHARS,
    MAX_SQL_INT,
    MEMBER,
    OWNER,
    GroupError,
    invalid,
)
from services.group.store_base import _conversation as _conversation
from services.group.store_base import _member as _member
from services.group.store_base import _member_row as _member_row
from services.group.store_conversations import ConversationStore
from services.group.store_cursors import CursorStore
from services.group.store_members import MemberStore

__all__ = [
    "ADMIN",
    "CREATE_ATTEMPTS",
    "DIRECT",
    "GROUP",
    "IN_CHUNK",
    "MANAGERS",
    "MAX_NAME_CHARS",
    "MAX_SQL_INT",
    "MEMBER",
    "OWNER",
    "GroupError",
    "GroupStore",
    "invalid",
]


class GroupStore(ConversationStore, MemberStore, CursorStore):
    """Conversations and members in SQL. Every method blocks: run it in a thread.

    Methods return protobuf messages, so no ORM object outlives its session.
    """
