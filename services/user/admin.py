"""The user service's half of the admin API (im.v1.UserAdminService): the changes to
the users and sessions tables. Its caller is the gateway, which then revokes the
ended sessions' access tokens, kicks their sockets and erases messages (docs/rest-api.md,
"Admin"). Internal gRPC only, like UserService: the operators' credentials are checked
by the gateway."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from argon2 import PasswordHasher
from sqlalchemy.engine import Engine

from im.clock import Clock
from im.ids import typeable_token
from im.sqlservice import ServiceError, rpc_errors
from im.v1 import admin_pb2, admin_pb2_grpc
from services.user.admin_store import AdminTable, Ended
from services.user.importer import (
    MAX_IMPORT_USERS,
    Candidate,
    ImportTable,
    RowError,
    check_row,
    drop_repeats,
)
from services.user.service import (
    MAX_DISPLAY_NAME_CHARS,
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    USERNAME_PATTERN,
    to_user,
)
from services.user.sessions import session_pb

log = logging.getLogger("im.user")
_rpc = rpc_errors("user")

GENERATED_PASSWORD_BYTES = 15  # 20 URL-safe characters, 120 random bits
Hashing = Callable[..., Awaitable[Any]]  # UserServicer.hashing: (fn, *args) on its pool


def _change(ended: Ended, generated: str = "") -> admin_pb2.UserChange:
    row, revoked, earlier = ended
    return admin_pb2.UserChange(
        user=to_user(row),
        revoked=[session_pb(r) for r in revoked],
        generated_password=generated,
        revoked_before=[session_pb(r) for r in earlier],
    )


def _user_id(user_id: int) -> int:
    if user_id <= 0:
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "user_id must be positive")
    return user_id


class UserAdminServicer(admin_pb2_grpc.UserAdminServiceServicer):
    def __init__(
        self, engine: Engine, hasher: PasswordHasher, hashing: Hashing, clock: Clock
    ) -> None:
        self._table = AdminTable(engine)
        self._imports = ImportTable(engine)
        self._hasher = hasher
        self._hashing = hashing
        self._clock = clock

    @_rpc
    async def SetDisabled(
        self, request: admin_pb2.SetUserDisabledRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.UserChange:
        ended = await asyncio.to_thread(
            self._table.set_disabled,
            _user_id(request.user_id),
            request.disabled,
            self._clock.wall_ms(),
        )
        return _change(ended)

    @_rpc
    async def ResetPassword(
        self, request: admin_pb2.ResetPasswordRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.UserChange:
        user_id = _user_id(request.user_id)
        password, generated = request.new_password, ""
        if not password:
            password = generated = typeable_token(GENERATED_PASSWORD_BYTES)
        elif not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters",
            )
        password_hash = await self._hashing(self._hasher.hash, password)
        ended = await asyncio.to_thread(
            self._table.set_password, user_id, password_hash, self._clock.wall_ms()
        )
        return _change(ended, generated)

    @_rpc
    async def DeleteUser(
        self, request: admin_pb2.AdminUserRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.UserChange:
        ended = await asyncio.to_thread(
            self._table.delete, _user_id(request.user_id), self._clock.wall_ms()
        )
        return _change(ended)

    @_rpc
    async def ListSessions(
        self, request: admin_pb2.AdminUserRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListSessionsResponse:
        row, sessions = await asyncio.to_thread(
            self._table.open_sessions, _user_id(request.user_id), self._clock.wall_ms()
        )
        return admin_pb2.ListSessionsResponse(
            user=to_user(row),
            sessions=[
                admin_pb2.AdminSession(
                    session_id=s.id,
                    device_id=s.device_id,
                    created_at=s.created_at,
                    last_seen_at=s.last_seen_at or s.created_at,
                    expires_at=s.expires_at,
                )
                for s in sessions
            ],
        )

    @_rpc
    async def ImportUsers(
        self, request: admin_pb2.ImportUsersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ImportUsersResponse:
        if len(request.users) > MAX_IMPORT_USERS:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {MAX_IMPORT_USERS} users per import call",
            )
        candidates, errors = self._checked(request.users)
        candidates, repeated = drop_repeats(candidates)
        await self._hash_plain(candidates)
        imported, taken = await asyncio.to_thread(
            self._imports.insert, candidates, self._clock.wall_ms()
        )
        errors = sorted([*errors, *repeated, *taken], key=lambda e: e.index)
        log.info("imported %d users (%d rows refused)", len(imported), len(errors))
        return admin_pb2.ImportUsersResponse(imported=imported, errors=errors)

    def _checked(
        self, users: list[admin_pb2.ImportUser]
    ) -> tuple[list[Candidate], list[admin_pb2.ImportError]]:
        candidates, errors = [], []
        for index, user in enumerate(users):
            try:
                candidates.append(
                    check_row(
                        index,
                        user,
                        USERNAME_PATTERN,
                        (MIN_PASSWORD_CHARS, MAX_PASSWORD_CHARS),
                        MAX_DISPLAY_NAME_CHARS,
                    )
                )
            except RowError as exc:
                errors.append(
                    admin_pb2.ImportError(
                        index=index, username=user.username[:64], code=exc.code, message=exc.message
                    )
                )
        return candidates, errors

    async def _hash_plain(self, candidates: list[Candidate]) -> None:
        """Rows with a plain password get it hashed here: the slow path (the hash pool
        runs a few at a time)."""
        plain = [c for c in candidates if c.password]
        hashes = await asyncio.gather(
            *(self._hashing(self._hasher.hash, c.password) for c in plain)
        )
        for candidate, password_hash in zip(plain, hashes, strict=True):
            candidate.password_hash = password_hash
            candidate.password = ""
