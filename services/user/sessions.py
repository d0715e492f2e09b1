"""The sessions table of the user service: login sessions and their refresh tokens.

A session is what a refresh token renews; its id is the access tokens' ``sid``. Only
the SHA-256 of a refresh token is stored (the token is 256 random bits, so a plain
hash is enough: there is nothing to guess). Each refresh replaces the token, and the
replaced one is remembered: presented again, it was copied, and the session ends
(refresh token rotation with reuse detection, as in OAuth 2.1).

Every change is one conditional UPDATE or one transaction, so two replicas racing on
the same token cannot both rotate it (the loser sees a reuse).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from sqlalchemy import delete, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from im.db import SessionRow, UserRow, retry_transaction
from im.sqlservice import ServiceError
from im.v1 import user_pb2


def session_pb(row: SessionRow) -> user_pb2.Session:
    return user_pb2.Session(
        session_id=row.id,
        user_id=row.user_id,
        device_id=row.device_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def _require_enabled(db: Session, user_id: int) -> None:
    disabled = db.scalars(
        select(UserRow.disabled).where(UserRow.id == user_id).with_for_update()
    ).first()
    if disabled:
        raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, "the account is disabled")


def _open(now: int) -> list:
    return [SessionRow.revoked_at.is_(None), SessionRow.expires_at > now]


class SessionTable:
    """Blocking SQLAlchemy calls: run them in a worker thread."""

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name != "sqlite":
            # Each statement here names its rows (a user, a device, a token hash); under
            # REPEATABLE READ InnoDB would also lock the gaps between them, and logins of
            # neighbouring users would deadlock each other.
            engine = engine.execution_options(isolation_level="READ COMMITTED")
        self._engine = engine

    @retry_transaction
    def create(
        self,
        user_id: int,
        device_id: str,
        session_id: str,
        refresh_hash: str,
        now: int,
        expires_at: int,
    ) -> list[SessionRow]:
        """Opens a session; returns the device's earlier open sessions, now revoked.
        A disabled or deleted user gets none (PERMISSION_DENIED): its row is locked
        first, so an admin disabling it at this moment waits for this session and
        revokes it, or is waited for and refuses it."""
        with Session(self._engine, expire_on_commit=False) as db, db.begin():
            _require_enabled(db, user_id)
            # Rows that can never be used again go first: the table stays the size of
            # the users' open sessions plus those revoked since their last login.
            db.execute(
                delete(SessionRow).where(
                    SessionRow.user_id == user_id,
                    or_(SessionRow.expires_at <= now, SessionRow.revoked_at.is_not(None)),
                )
            )
            revoked = self.revoke_where(
                db, now, SessionRow.user_id == user_id, SessionRow.device_id == device_id
            )
            db.add(
                SessionRow(
                    id=session_id,
                    user_id=user_id,
                    device_id=device_id,
                    refresh_hash=refresh_hash,
                    previous_hash=None,
                    created_at=now,
                    expires_at=expires_at,
                    revoked_at=None,
                    last_seen_at=now,
                )
            )
        return revoked

    @retry_transaction
    def rotate(
        self, old_hash: str, new_hash: str, now: int, expires_at: int
    ) -> tuple[SessionRow | None, bool]:
        """(session, False) after replacing its token; (session, True) when ``old_hash``
        is the token it replaced last (the session is revoked now); (None, False) for
        a token of no open session."""
        with Session(self._engine, expire_on_commit=False) as db, db.begin():
            changed = db.execute(
                update(SessionRow)
                .where(SessionRow.refresh_hash == old_hash, *_open(now))
                .values(
                    refresh_hash=new_hash,
                    previous_hash=old_hash,
                    expires_at=expires_at,
                    last_seen_at=now,
                )
            ).rowcount
            if changed:
                row = db.scalars(
                    select(SessionRow).where(SessionRow.refresh_hash == new_hash)
                ).one()
                return row, False
            reused = self.revoke_where(db, now, SessionRow.previous_hash == old_hash)
        if reused:
            return reused[0], True
        return None, False

    @retry_transaction
    def revoke(
        self, user_id: int, session_id: str = "", except_session_id: str = "", now: int = 0
    ) -> list[SessionRow]:
        """Revokes the user's open sessions: ``session_id`` only, or all but
        ``except_session_id``; returns those revoked."""
        conditions = [SessionRow.user_id == user_id]
        if session_id:
            conditions.append(SessionRow.id == session_id)
        if except_session_id:
            conditions.append(SessionRow.id != except_session_id)
        with Session(self._engine, expire_on_commit=False) as db, db.begin():
            return self.revoke_where(db, now, *conditions)

    @retry_transaction
    def change_password(
        self, user_id: int, old_hash: str, new_hash: str, keep_session_id: str, now: int
    ) -> list[SessionRow] | None:
        """Stores the new password hash and revokes every other session, together.
        None when the stored hash is no longer ``old_hash`` (changed meanwhile)."""
        with Session(self._engine, expire_on_commit=False) as db, db.begin():
            changed = db.execute(
                update(UserRow)
                .where(UserRow.id == user_id, UserRow.password_hash == old_hash)
                .values(password_hash=new_hash)
            ).rowcount
            if not changed:
                return None
            conditions = [SessionRow.user_id == user_id]
            if keep_session_id:
                conditions.append(SessionRow.id != keep_session_id)
            return self.revoke_where(db, now, *conditions)

    @staticmethod
    def revoke_where(db: Session, now: int, *conditions: object) -> list[SessionRow]:
        rows: Sequence[SessionRow] = db.scalars(
            select(SessionRow).where(*conditions, *_open(now))  # type: ignore[arg-type]
        ).all()
        if rows:
            db.execute(
                update(SessionRow)
                .where(SessionRow.id.in_([r.id for r in rows]), SessionRow.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return list(rows)
