"""Login sessions at the gateway: refresh tokens, logout, logout everywhere, and the
password change, on the user service's sessions table and the SessionStore port.

A session's id is the ``sid`` of every access token issued for it, first at login,
then at each refresh; revoking the session puts that id in the SessionStore for as
long as any of those tokens could still verify, so REST and the connectors refuse
them all. Live sockets of a revoked session are kicked. The refresh token itself is
256 random bits; the user service keeps only its SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from im.auth import Claims, TokenIssuer
from im.config import Settings
from im.ports import SessionStore
from im.v1 import user_pb2, user_pb2_grpc, wire_pb2

log = logging.getLogger("im.gateway")

T = TypeVar("T")
REFRESH_TOKEN_BYTES = 32

Rpc = Callable[..., Awaitable[Any]]  # Calls.rpc: (call, request) -> response
Backend = Callable[[str, Awaitable[T]], Awaitable[T]]  # Calls.backend
Kick = Callable[[Claims, int], Awaitable[None]]  # ConnectorAssigner.kick(claims, reason)


def new_refresh_token() -> tuple[str, str]:
    """A fresh refresh token and the hash that is stored in its place."""
    token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    return token, refresh_hash(token)


def refresh_hash(token: str) -> str:
    # A plain hash suffices: the token is 256 random bits, nothing a guess could find.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Issued:
    """The tokens of one login or refresh."""

    access_token: str
    claims: Claims
    refresh_token: str
    refresh_expires_in: int


class RefreshRefused(Exception):
    """The refresh token opens no session (unknown, expired, revoked or reused)."""


class Sessions:
    def __init__(
        self,
        settings: Settings,
        issuer: TokenIssuer,
        users: Callable[[], user_pb2_grpc.UserServiceStub],
        store: Callable[[], SessionStore],
        rpc: Rpc,
        backend: Backend,
        kick: Kick,
        leeway: float,
    ) -> None:
        self._settings = settings
        self._issuer = issuer
        self._users = users
        self._store = store
        self._rpc = rpc
        self._backend = backend
        self._kick = kick
        # A revoked sid is remembered as long as its newest access token could verify.
        self._revocation_ttl = issuer.ttl_seconds + leeway

    def _refresh_ttl(self) -> int:
        return self._settings.refresh_token_ttl_seconds

    def _expiry_ms(self, now: float) -> int:
        return int((now + self._refresh_ttl()) * 1000)

    async def open(self, user_id: int, device_id: str, now: float) -> Issued:
        """A new session for a login; the device's earlier sessions end."""
        token, claims = self._issuer.issue(user_id, device_id, now=now)
        refresh, hashed = new_refresh_token()
        request = user_pb2.CreateSessionRequest(
            user_id=user_id,
            device_id=device_id,
            session_id=claims.session_id,
            refresh_token_hash=hashed,
            expires_at=self._expiry_ms(now),
        )
        response = await self._rpc(self._users().CreateSession, request)
        await self._end(response.revoked, wire_pb2.KICK_REASON_DEVICE_LOGGED_IN_ELSEWHERE)
        return Issued(token, claims, refresh, self._refresh_ttl())

    async def refresh(self, refresh_token: str, now: float) -> Issued:
        """New tokens for the session of ``refresh_token``; the old one is spent."""
        new, hashed = new_refresh_token()
        request = user_pb2.RotateSessionRequest(
            refresh_token_hash=refresh_hash(refresh_token),
            new_refresh_token_hash=hashed,
            expires_at=self._expiry_ms(now),
        )
        try:
            response = await self._rpc(self._users().RotateSession, request)
        except Exception as exc:
            if getattr(exc, "status", 0) == 401:
                raise RefreshRefused() from exc
            raise
        session = response.session
        if response.reused:
            # A copy of a spent token: someone else has it. The session ends for both.
            await self._end([session], wire_pb2.KICK_REASON_TOKEN_REVOKED)
            raise RefreshRefused()
        token, claims = self._issuer.issue(
            session.user_id, session.device_id, now=now, session_id=session.session_id
        )
        return Issued(token, claims, new, self._refresh_ttl())

    async def logout(self, claims: Claims) -> None:
        """Ends this token's session (its refresh token too) and kicks its socket."""
        request = user_pb2.RevokeSessionsRequest(
            user_id=claims.user_id, session_id=claims.session_id
        )
        await self._rpc(self._users().RevokeSessions, request)
        # Also when the table had no row (a token from before sessions were stored).
        await self._end([_as_session(claims)], wire_pb2.KICK_REASON_TOKEN_REVOKED)

    async def logout_all(self, claims: Claims) -> int:
        """Ends every session of the user; returns how many were open."""
        request = user_pb2.RevokeSessionsRequest(user_id=claims.user_id)
        response = await self._rpc(self._users().RevokeSessions, request)
        sessions = list(response.revoked)
        if claims.session_id not in {s.session_id for s in sessions}:
            sessions.append(_as_session(claims))
        await self._end(sessions, wire_pb2.KICK_REASON_TOKEN_REVOKED)
        return len(response.revoked)

    async def change_password(self, claims: Claims, current: str, new: str) -> int:
        """Sets a new password; every other session ends. Returns how many did."""
        request = user_pb2.ChangePasswordRequest(
            user_id=claims.user_id,
            current_password=current,
            new_password=new,
            keep_session_id=claims.session_id,
        )
        response = await self._rpc(self._users().ChangePassword, request)
        await self._end(response.revoked, wire_pb2.KICK_REASON_TOKEN_REVOKED)
        return len(response.revoked)

    async def end(self, sessions: list[user_pb2.Session], reason: int) -> None:
        """Sessions the user service has revoked (an admin's doing): their access
        tokens stop working and their sockets are kicked."""
        await self._end(sessions, reason)

    async def _end(self, sessions: list[user_pb2.Session], reason: int) -> None:
        """Revokes the sessions' access tokens, then kicks their live sockets, telling
        them ``reason`` (a ``wire_pb2.KickReason``)."""
        if not sessions:
            return
        store = self._store()
        await self._backend(
            "sessions",
            asyncio.gather(*(store.revoke(s.session_id, self._revocation_ttl) for s in sessions)),
        )
        await asyncio.gather(*(self._kick_quietly(s, reason) for s in sessions))

    async def _kick_quietly(self, session: user_pb2.Session, reason: int) -> None:
        try:
            claims = Claims(session.user_id, session.device_id, session.session_id, 0)
            await self._kick(claims, reason)
        except Exception as exc:
            # Already revoked: a connector that missed the kick refuses the session at
            # the socket's next Auth.
            log.warning(
                "kick of user %s device %s failed: %r", session.user_id, session.device_id, exc
            )


def _as_session(claims: Claims) -> user_pb2.Session:
    return user_pb2.Session(
        session_id=claims.session_id, user_id=claims.user_id, device_id=claims.device_id
    )
