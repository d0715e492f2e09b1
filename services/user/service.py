"""User service: registration, credential checks and user look-ups (im.v1.UserService).

Usernames are stored lowercased, so "Alice" and "alice" are the same account; the
unique index on ``users.username`` is what finally decides a race between two
registrations. Passwords are hashed with argon2id. Hashing is deliberately slow and
memory hungry, so it runs on its own small thread pool: a burst of logins can then
neither block the event loop nor starve the database calls on the default pool.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from argon2 import PasswordHasher
from sqlalchemy import or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from im.auth import password_hasher, verify_password
from im.clock import Clock, SystemClock
from im.config import Settings
from im.db import UserRow
from im.sqlservice import ServiceError, rpc_errors
from im.v1 import user_pb2, user_pb2_grpc
from im.validation import InvalidInput, require_clean_name, require_ids
from services.user.presence import PresenceRpcs, PresenceTable
from services.user.sessions import SessionTable, session_pb

log = logging.getLogger("im.user")

USERNAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{3,32}")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 256
MAX_DISPLAY_NAME_CHARS = 128
MAX_USERS_PER_LOOKUP = 1000
SHA256_HEX_CHARS = 64
# Placeholder verified when the user is unknown, so both failures cost the same time.
_DUMMY_PASSWORD = "not-a-real-password-only-for-timing"


# Refusals carry their gRPC status; the shared wrapper turns them into aborts.
UserError = ServiceError


def _invalid(message: str) -> UserError:
    return UserError(grpc.StatusCode.INVALID_ARGUMENT, message)


_R = TypeVar("_R")
_rpc = rpc_errors("user")


def to_user(row: UserRow) -> user_pb2.User:
    return user_pb2.User(
        user_id=row.id,
        username=row.username,
        display_name=row.display_name,
        created_at=row.created_at,
        disabled=bool(row.disabled),
        deleted=row.deleted_at is not None,
    )


def normalize_username(username: str) -> str:
    return username.lower()


def validate_registration(username: str, password: str, display_name: str) -> str:
    """Checks the request's shape; returns the display name to store."""
    if not USERNAME_PATTERN.fullmatch(username):
        raise _invalid("username must be 3 to 32 characters of letters, digits, '_', '.' or '-'")
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise _invalid(f"password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
    display_name = display_name.strip() or username
    if len(display_name) > MAX_DISPLAY_NAME_CHARS:
        raise _invalid(f"display_name must be at most {MAX_DISPLAY_NAME_CHARS} characters")
    try:
        return require_clean_name(display_name, "display_name")
    except InvalidInput as exc:
        raise _invalid(str(exc)) from None


class UserStore:
    """The users table. Blocking SQLAlchemy calls: run them in a worker thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(
        self, username: str, display_name: str, password_hash: str, created_at: int
    ) -> UserRow:
        row = UserRow(
            username=username,
            display_name=display_name,
            password_hash=password_hash,
            created_at=created_at,
        )
        try:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                session.add(row)
        except IntegrityError:
            # The unique index, not a pre-check, settles concurrent registrations.
            raise UserError(
                grpc.StatusCode.ALREADY_EXISTS, f"username {username!r} is taken"
            ) from None
        return row

    def by_username(self, username: str) -> UserRow | None:
        with Session(self._engine) as session:
            return session.scalars(select(UserRow).where(UserRow.username == username)).first()

    def replace_hash(self, user_id: int, old_hash: str, new_hash: str) -> None:
        # Only if nobody changed it meanwhile (a concurrent login's rehash is as good).
        with Session(self._engine) as session, session.begin():
            session.execute(
                update(UserRow)
                .where(UserRow.id == user_id, UserRow.password_hash == old_hash)
                .values(password_hash=new_hash)
            )

    def lookup(self, user_ids: list[int], usernames: list[str]) -> list[UserRow]:
        conditions = []
        if user_ids:
            conditions.append(UserRow.id.in_(user_ids))
        if usernames:
            conditions.append(UserRow.username.in_(usernames))
        if not conditions:
            return []
        with Session(self._engine) as session:
            return list(session.scalars(select(UserRow).where(or_(*conditions))))


class UserServicer(PresenceRpcs, user_pb2_grpc.UserServiceServicer):
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        clock: Clock | None = None,
        hash_workers: int | None = None,
    ) -> None:
        self._store = UserStore(engine)
        self._sessions = SessionTable(engine)
        self._presence = PresenceTable(engine)
        self._hasher: PasswordHasher = password_hasher(settings)
        self._clock = clock or SystemClock()
        self._hash_pool = ThreadPoolExecutor(
            max_workers=hash_workers or os.cpu_count() or 2, thread_name_prefix="argon2"
        )
        self._dummy_hash: str | None = None

    async def close(self) -> None:
        self._hash_pool.shutdown(wait=False, cancel_futures=True)

    @property
    def hasher(self) -> PasswordHasher:
        return self._hasher

    @property
    def clock(self) -> Clock:
        return self._clock

    async def hashing(self, fn: Callable[..., _R], *args: Any) -> _R:
        """Runs ``fn`` on the hash pool (argon2: slow on purpose)."""
        return await self._hashing(fn, *args)

    async def _hashing(self, fn: Callable[..., _R], *args: Any) -> _R:
        return await asyncio.get_running_loop().run_in_executor(self._hash_pool, fn, *args)

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self._hashing(self._hasher.hash, _DUMMY_PASSWORD)
        return self._dummy_hash

    @_rpc
    async def Register(
        self, request: user_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.RegisterResponse:
        display_name = validate_registration(
            request.username, request.password, request.display_name
        )
        password_hash = await self._hashing(self._hasher.hash, request.password)
        row = await asyncio.to_thread(
            self._store.insert,
            normalize_username(request.username),
            display_name,
            password_hash,
            self._clock.wall_ms(),
        )
        log.info("registered user %d (%s)", row.id, row.username)
        return user_pb2.RegisterResponse(user=to_user(row))

    @_rpc
    async def Authenticate(
        self, request: user_pb2.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.AuthenticateResponse:
        rejected = UserError(grpc.StatusCode.UNAUTHENTICATED, "wrong username or password")
        # Names or passwords that could never have been registered are refused at once:
        # their shape is no secret, and an endless password must not reach argon2.
        if not USERNAME_PATTERN.fullmatch(request.username) or not (
            0 < len(request.password) <= MAX_PASSWORD_CHARS
        ):
            raise rejected
        row = await asyncio.to_thread(self._store.by_username, normalize_username(request.username))
        # A user imported without a password (or deleted) has none: it costs the same
        # time as a wrong one, so the answer's timing tells nothing.
        has_hash = row is not None and bool(row.password_hash)
        stored_hash = row.password_hash if row is not None and has_hash else await self._dummy()
        ok = await self._hashing(verify_password, self._hasher, stored_hash, request.password)
        if row is None or not has_hash or not ok:
            raise rejected
        if row.disabled:
            # Said only to whoever knows the password: the owner learns why.
            raise UserError(grpc.StatusCode.PERMISSION_DENIED, "the account is disabled")
        if self._hasher.check_needs_rehash(row.password_hash):
            # The cost parameters were raised since this hash was made: upgrade it now,
            # while the plain password is at hand.
            new_hash = await self._hashing(self._hasher.hash, request.password)
            await asyncio.to_thread(self._store.replace_hash, row.id, row.password_hash, new_hash)
        return user_pb2.AuthenticateResponse(user=to_user(row))

    @_rpc
    async def GetUsers(
        self, request: user_pb2.GetUsersRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.GetUsersResponse:
        if len(request.user_ids) + len(request.usernames) > MAX_USERS_PER_LOOKUP:
            raise _invalid(f"at most {MAX_USERS_PER_LOOKUP} user ids and names per call")
        try:
            user_ids = list(dict.fromkeys(require_ids(request.user_ids, "user_ids")))
        except InvalidInput as exc:
            raise _invalid(str(exc)) from None
        usernames = list(dict.fromkeys(normalize_username(n) for n in request.usernames if n))
        rows = await asyncio.to_thread(self._store.lookup, user_ids, usernames)
        return user_pb2.GetUsersResponse(
            users=[to_user(r) for r in _in_request_order(rows, user_ids, usernames)]
        )

    # ---------------------------------------------------------------- sessions
    @_rpc
    async def CreateSession(
        self, request: user_pb2.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.CreateSessionResponse:
        if not (request.user_id > 0 and request.device_id and request.session_id):
            raise _invalid("user_id, device_id and session_id are required")
        if len(request.refresh_token_hash) != SHA256_HEX_CHARS:
            raise _invalid("refresh_token_hash must be a hex SHA-256")
        revoked = await asyncio.to_thread(
            self._sessions.create,
            request.user_id,
            request.device_id,
            request.session_id,
            request.refresh_token_hash,
            self._clock.wall_ms(),
            request.expires_at,
        )
        return user_pb2.CreateSessionResponse(revoked=[session_pb(r) for r in revoked])

    @_rpc
    async def RotateSession(
        self, request: user_pb2.RotateSessionRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.RotateSessionResponse:
        if len(request.new_refresh_token_hash) != SHA256_HEX_CHARS:
            raise _invalid("new_refresh_token_hash must be a hex SHA-256")
        row, reused = await asyncio.to_thread(
            self._sessions.rotate,
            request.refresh_token_hash,
            request.new_refresh_token_hash,
            self._clock.wall_ms(),
            request.expires_at,
        )
        if row is None:
            raise UserError(grpc.StatusCode.UNAUTHENTICATED, "invalid or expired refresh token")
        if reused:
            log.warning("refresh token reused: session %s of user %d revoked", row.id, row.user_id)
        return user_pb2.RotateSessionResponse(session=session_pb(row), reused=reused)

    @_rpc
    async def RevokeSessions(
        self, request: user_pb2.RevokeSessionsRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.RevokeSessionsResponse:
        revoked = await asyncio.to_thread(
            self._sessions.revoke,
            request.user_id,
            request.session_id,
            request.except_session_id,
            self._clock.wall_ms(),
        )
        return user_pb2.RevokeSessionsResponse(revoked=[session_pb(r) for r in revoked])

    @_rpc
    async def ChangePassword(
        self, request: user_pb2.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.ChangePasswordResponse:
        if not MIN_PASSWORD_CHARS <= len(request.new_password) <= MAX_PASSWORD_CHARS:
            raise _invalid(
                f"password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
            )
        rejected = UserError(grpc.StatusCode.UNAUTHENTICATED, "wrong current password")
        if not 0 < len(request.current_password) <= MAX_PASSWORD_CHARS:
            raise rejected
        rows = await asyncio.to_thread(self._store.lookup, [request.user_id], [])
        if not rows:
            raise UserError(grpc.StatusCode.NOT_FOUND, f"user {request.user_id} does not exist")
        old_hash = rows[0].password_hash
        ok = await self._hashing(verify_password, self._hasher, old_hash, request.current_password)
        if not ok:
            raise rejected
        new_hash = await self._hashing(self._hasher.hash, request.new_password)
        revoked = await asyncio.to_thread(
            self._sessions.change_password,
            request.user_id,
            old_hash,
            new_hash,
            request.keep_session_id,
            self._clock.wall_ms(),
        )
        if revoked is None:
            # Changed by a concurrent request since we checked: check against that one.
            raise UserError(grpc.StatusCode.ABORTED, "the password changed meanwhile; retry")
        log.info(
            "user %d changed the password; %d other sessions revoked", request.user_id, len(revoked)
        )
        return user_pb2.ChangePasswordResponse(revoked=[session_pb(r) for r in revoked])


def _in_request_order(
    rows: Iterable[UserRow], user_ids: list[int], usernames: list[str]
) -> list[UserRow]:
    """Ids first, then names, as asked; a user asked for twice is returned once."""
    by_id = {r.id: r for r in rows}
    by_name = {r.username: r for r in by_id.values()}
    ordered: dict[int, UserRow] = {}
    for user_id in user_ids:
        if user_id in by_id:
            ordered.setdefault(user_id, by_id[user_id])
    for name in usernames:
        if name in by_name:
            row = by_name[name]
            ordered.setdefault(row.id, row)
    return list(ordered.values())
