"""SQL schema (SQLAlchemy 2.x) shared by the user and group services and the SQL
message store, and the engine factory (MySQL via pymysql, SQLite standalone)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
    create_engine,
    event,
    false,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

log = logging.getLogger("im.db")
P = ParamSpec("P")
R = TypeVar("R")

# SQLite only auto-increments an INTEGER PRIMARY KEY.
Id64 = BigInteger().with_variant(Integer, "sqlite")

# Longest group description and avatar (URL or attachment id) a group may have.
GROUP_DESCRIPTION_CHARS = 1000
GROUP_AVATAR_CHARS = 512

# Longest dead-letter reason kept; the SQL message store cuts longer ones to fit.
DEAD_LETTER_REASON_CHARS = 1024
# Room for IM_MAX_ATTACHMENTS_PER_MESSAGE (at most 40) ids of 22 characters, spaced.
ATTACHMENT_IDS_CHARS = 1024

# Longest name a member may give a conversation for itself.
MEMBER_SETTINGS_NAME_CHARS = 64


class Base(DeclarativeBase):
    pass


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Id64, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Set by an admin (docs/rest-api.md, "Admin"): a disabled user cannot log in or
    # open a session; a deleted one (deleted_at, ms) is renamed and has no password.
    disabled: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class PresenceRow(Base):
    """A user's presence setting and durable last-seen time (users without a row are
    visible, last seen unknown). Its own table: written once per going offline, never
    on the users row that logins read."""

    __tablename__ = "presence"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    visible: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    last_seen_ms: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class SessionRow(Base):
    """A login session of the user service: what a refresh token renews. Its id is
    the access tokens' ``sid``. Refresh tokens are kept only as SHA-256 hashes; the
    one replaced last stays known, so a stolen copy used after rotation is caught."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_refresh", "refresh_hash", unique=True),
        Index("ix_sessions_previous", "previous_hash"),
        Index("ix_sessions_user_device", "user_id", "device_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    device_id: Mapped[str] = mapped_column(String(64), nullable=False)
    refresh_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    previous_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The login or the last refresh (ms): what an admin's session list shows.
    last_seen_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ConversationRow(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    owner_id: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    member_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    member_version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    history_visible: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # Group lifecycle (services/group/lifecycle.py).
    description: Mapped[str] = mapped_column(
        String(GROUP_DESCRIPTION_CHARS), nullable=False, default="", server_default=""
    )
    avatar: Mapped[str] = mapped_column(
        String(GROUP_AVATAR_CHARS), nullable=False, default="", server_default=""
    )
    dissolved_at: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    change_version: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )


class MemberRow(Base):
    __tablename__ = "members"
    __table_args__ = (
        Index("ix_members_user", "user_id", "conversation_id"),
        # Receipts: count and page members by read cursor without a row per message.
        Index("ix_members_read", "conversation_id", "read_seq"),
    )

    conversation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    role: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    joined_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    delivered_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    read_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    joined_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class UserBlockRow(Base):
    """``blocker_id`` blocked ``blocked_id``: no 1:1 messages between them, no group
    invites from the blocked user, no presence. Kept by the group service, which
    answers "may this user send here" and "may this user add that one"."""

    __tablename__ = "user_blocks"
    __table_args__ = (Index("ix_user_blocks_blocked", "blocked_id", "blocker_id"),)

    blocker_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    blocked_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class UserPrivacyRow(Base):
    """A user's privacy settings; no row means the defaults (everything allowed)."""

    __tablename__ = "user_privacy"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # Group invites only from contacts (see services/group/privacy.py).
    invites_from_contacts_only: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class GroupInviteRow(Base):
    """An invite link of a group. Only the SHA-256 of its token is kept (the token is
    a bearer secret); ``link_id`` is the public handle to list and revoke it by."""

    __tablename__ = "group_invites"
    __table_args__ = (
        Index("ix_group_invites_link", "link_id", unique=True),
        Index("ix_group_invites_conversation", "conversation_id"),
    )

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    link_id: Mapped[str] = mapped_column(String(16), nullable=False)
    conversation_id: Mapped[str] = mapped_column(String(64), nullable=False)
    created_by: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    max_uses: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    uses: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    approval_required: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class GroupJoinRequestRow(Base):
    """A user asking to join through a link that needs approval; gone once decided."""

    __tablename__ = "group_join_requests"

    conversation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    link_id: Mapped[str] = mapped_column(String(16), nullable=False)
    requested_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class MemberSettingsRow(Base):
    """One member's own settings of a conversation (mute, pin, archive, a name of its
    own). A row only once something was set; no row reads as the defaults. Keyed by
    user first: the conversation list reads all of one user's rows."""

    __tablename__ = "member_settings"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # ms since the epoch; 0 = not muted; -1 = muted forever.
    muted_until: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    pinned: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    archived: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    name: Mapped[str] = mapped_column(String(MEMBER_SETTINGS_NAME_CHARS), nullable=False)
    updated_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class MessageRow(Base):
    """The SQL message store's table: one row per message, never one per member."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq", name="uq_messages_conv_seq"),
        # A recall finds the edit events of its target (to erase their text too).
        Index("ix_messages_refers_to", "refers_to"),
    )

    msg_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    conversation_id: Mapped[str] = mapped_column(String(64), nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sender_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sender_device: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    client_msg_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    content_type: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    body: Mapped[bytes] = mapped_column(LargeBinary(length=16 * 1024 * 1024), nullable=False)
    server_ts: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Events (recall, edit): the msg_id they act on; NULL for ordinary messages, so
    # the index holds next to nothing for them.
    refers_to: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The current state of an edited or recalled message (server defaults: rows
    # written by an older version of the suite read as "neither").
    edited_at: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    recalled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    # Seq of the edit event applied last: an older edit seen again changes nothing.
    edit_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")

    # The message's attachment ids, space-separated (ids are URL-safe base64).
    attachment_ids: Mapped[str] = mapped_column(
        String(ATTACHMENT_IDS_CHARS), nullable=False, default="", server_default=""
    )


class DeadLetterRow(Base):
    """A bus record the router set aside (``im.ports.DeadLetter``), kept for an operator.

    ``letter_id`` is derived from the record, so a record seen again after a rewind
    finds its row already there and is stored once."""

    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_at", "at_ms"),)

    letter_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255), nullable=False)
    partition: Mapped[int] = mapped_column(Integer, nullable=False)
    offset: Mapped[int] = mapped_column(BigInteger, nullable=False)
    key: Mapped[str] = mapped_column(String(255), nullable=False)
    value: Mapped[bytes] = mapped_column(LargeBinary(length=16 * 1024 * 1024), nullable=False)
    reason: Mapped[str] = mapped_column(String(DEAD_LETTER_REASON_CHARS), nullable=False)
    at_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)


# Schema objects of message search (migration 0008_search) that the models leave out:
# they differ per database (an FTS5 table and its shadow tables on SQLite, a generated
# column with a FULLTEXT index on MySQL), so schema comparisons skip them.
SEARCH_TABLE_PREFIX = "message_search"
SEARCH_COLUMN = "search_text"
SEARCH_INDEX = "ft_messages_search"


def include_in_schema_compare(obj, name, type_, reflected, compare_to) -> bool:  # type: ignore[no-untyped-def]
    """Alembic ``include_object``: everything but the search objects above."""
    if type_ == "table" and name and name.startswith(SEARCH_TABLE_PREFIX):
        return False
    if type_ == "column" and name == SEARCH_COLUMN:
        return False
    return not (type_ == "index" and name == SEARCH_INDEX)


# A transaction the database chose as a deadlock victim (or that waited too long for a
# lock) was rolled back whole: running it again is the documented remedy. MySQL/MariaDB
# error numbers; PostgreSQL SQLSTATEs (deadlock, serialization failure).
_RETRYABLE_MYSQL = {1213, 1205}
_RETRYABLE_SQLSTATE = {"40P01", "40001"}
TRANSACTION_ATTEMPTS = 5


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a rolled-back transaction that may simply run again."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and args[0] in _RETRYABLE_MYSQL:
        return True
    return getattr(orig, "sqlstate", None) in _RETRYABLE_SQLSTATE or (
        getattr(orig, "pgcode", None) in _RETRYABLE_SQLSTATE
    )


def retry_transaction(
    transaction: Callable[P, R], attempts: int = TRANSACTION_ATTEMPTS
) -> Callable[P, R]:
    """Runs ``transaction`` (one whole transaction, blocking) again when the database
    rolled it back as a deadlock victim; other errors pass through. Concurrent logins
    of different users take gap locks on one index in InnoDB, so deadlocks are normal
    there, not a fault."""

    @functools.wraps(transaction)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, attempts + 1):
            try:
                return transaction(*args, **kwargs)
            except DBAPIError as exc:
                if attempt == attempts or not is_retryable(exc):
                    raise
                log.info("%s: transaction rolled back (%s), again", transaction.__name__, exc.orig)
        raise AssertionError("unreachable")

    return run


def make_engine(url: str) -> Engine:
    """An engine with pooling and reconnect on stale connections; creates the schema."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    else:
        if parsed.get_backend_name() == "mysql" and "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        engine = create_engine(
            parsed, pool_pre_ping=True, pool_recycle=1800, pool_size=10, max_overflow=20
        )
    return engine


def create_schema(engine: Engine) -> str:
    """Create or upgrade the schema to the newest migration (Alembic); returns the
    revision now in place. Safe to run again: it applies only what is missing."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() or ""
