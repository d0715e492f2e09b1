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

# Longest dead-letter reason kept; the SQL message store cuts longer ones to fit.
DEAD_LETTER_REASON_CHARS = 1024


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


class MessageRow(Base):
    """The SQL message store's table: one row per message, never one per member."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("conversation_id", "seq", name="uq_messages_conv_seq"),)

    msg_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    conversation_id: Mapped[str] = mapped_column(String(64), nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sender_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sender_device: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    client_msg_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    content_type: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    body: Mapped[bytes] = mapped_column(LargeBinary(length=16 * 1024 * 1024), nullable=False)
    server_ts: Mapped[int] = mapped_column(BigInteger, nullable=False)


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
