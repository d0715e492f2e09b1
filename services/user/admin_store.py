"""The users and sessions tables as an admin changes them: disable, enable, a new
password, delete, and the list of a user's open sessions.

Each change is one transaction that locks the user's row first, so a login that is
opening a session at the same moment (``SessionTable.create`` locks the same row)
either finishes before it (and its session is revoked here) or sees the change (and
is refused). Blocking SQLAlchemy calls: run them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from im.db import SessionRow, UserRow, retry_transaction
from im.sqlservice import ServiceError
from services.user.sessions import SessionTable

DELETED_DISPLAY_NAME = "Deleted user"
# The user as changed, the sessions revoked now, and those revoked before.
Ended = tuple[UserRow, list[SessionRow], list[SessionRow]]


def deleted_username(user_id: int) -> str:
    # ':' is not allowed in usernames, so no registration can ever take this name,
    # and the deleted user's own name is free again.
    return f"deleted:{user_id}"


def _locked_user(db: Session, user_id: int) -> UserRow:
    row = db.scalars(select(UserRow).where(UserRow.id == user_id).with_for_update()).first()
    if row is None:
        raise ServiceError(grpc.StatusCode.NOT_FOUND, f"user {user_id} does not exist")
    return row


def _not_deleted(row: UserRow, what: str) -> None:
    if row.deleted_at is not None:
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION, f"user {row.id} is deleted: cannot {what}"
        )


def _revoke_all(db: Session, user_id: int, now: int) -> list[SessionRow]:
    return SessionTable.revoke_where(db, now, SessionRow.user_id == user_id)


def revoked_before(db: Session, user_id: int, now: int) -> list[SessionRow]:
    """The user's sessions revoked earlier whose refresh tokens had not expired: their
    access tokens may still be live if their revocation did not reach the store."""
    return list(
        db.scalars(
            select(SessionRow).where(
                SessionRow.user_id == user_id,
                SessionRow.revoked_at.is_not(None),
                SessionRow.expires_at > now,
            )
        )
    )


class AdminTable:
    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name != "sqlite":
            # As in SessionTable: no gap locks between neighbouring users' rows.
            engine = engine.execution_options(isolation_level="READ COMMITTED")
        self._engine = engine

    @retry_transaction
    def set_disabled(self, user_id: int, disabled: bool, now: int) -> Ended:
        """Disabling revokes every open session of the user in the same transaction."""
        with Session(self._engine, expire_on_commit=False) as db, db.begin():
            row = _locked_user(db, user_id)
            if not disabled:
                _not_deleted(row, "enable it")
                row.disabled = False
                return row, [], []
            row.disabled = True
            earlier = revoked_before(db, user_id, now)
            revoked = _revoke_all(db, user_id, now)
        return row, revoked, earlier

    @retry_transaction
    def set_password(self, user_id: int, password_hash: str, now: int) -> Ended:
        with Session(self._engine, expire_on_commit=False) as db, db.begin():
            row = _locked_user(db, user_id)
            _not_deleted(row, "set a password")
            row.password_hash = password_hash
            earlier = revoked_before(db, user_id, now)
            revoked = _revoke_all(db, user_id, now)
        return row, revoked, earlier

    @retry_transaction
    def delete(self, user_id: int, now: int) -> Ended:
        """Renames the user, removes its password and disables it; the row stays, so
        its messages still name a user (shown as deleted)."""
        with Session(self._engine, expire_on_commit=False) as db, db.begin():
            row = _locked_user(db, user_id)
            row.username = deleted_username(user_id)
            row.display_name = DELETED_DISPLAY_NAME
            row.password_hash = ""
            row.disabled = True
            if row.deleted_at is None:
                row.deleted_at = now
            earlier = revoked_before(db, user_id, now)
            revoked = _revoke_all(db, user_id, now)
        return row, revoked, earlier

    def open_sessions(self, user_id: int, now: int) -> tuple[UserRow, Sequence[SessionRow]]:
        with Session(self._engine, expire_on_commit=False) as db:
            row = db.get(UserRow, user_id)
            if row is None:
                raise ServiceError(grpc.StatusCode.NOT_FOUND, f"user {user_id} does not exist")
            sessions = db.scalars(
                select(SessionRow)
                .where(
                    SessionRow.user_id == user_id,
                    SessionRow.revoked_at.is_(None),
                    SessionRow.expires_at > now,
                )
                .order_by(SessionRow.created_at.desc())
            ).all()
        return row, sessions
