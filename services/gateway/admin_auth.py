"""Operators' credentials and the audit log of the admin API.

Operators are not chat users: they hold an admin token (IM_ADMIN_TOKEN, or the lines of
IM_ADMIN_TOKEN_FILE, each optionally named), and no user's access token opens an admin
route. A presented token is compared with every configured one in constant time (as
SHA-256 digests, so lengths tell nothing either). Wrong tokens are failures of the
client address with the failed-login backoff: past the allowance the address waits,
answered 429 / RESOURCE_EXHAUSTED before its token is even looked at.

Every admin action, and every refused attempt, is one line of the ``im.audit`` logger:
who (token name, the operator the caller claims, its address), what, on whom, result.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from im.config import Settings
from im.ports import Backoff, RateLimiter
from services.gateway.limits import Degrade, RateLimited, address_key

audit_log = logging.getLogger("im.audit")

MIN_TOKEN_CHARS = 32
DEFAULT_NAME = "admin"
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
# What a caller may say about who it is (X-Admin-Actor): logged, never trusted.
_ACTOR_UNSAFE = re.compile(r"[^A-Za-z0-9_.@:+-]")
MAX_ACTOR_CHARS = 64


class AdminConfigError(ValueError):
    """The configured admin tokens cannot be used (too short, unreadable, badly named)."""


class AdminRefused(Exception):
    """No admin access: ``off`` (no token configured) or ``unauthorized``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class AdminToken:
    name: str
    digest: bytes


def parse_token_lines(text: str) -> list[tuple[str, str]]:
    """``name:token`` or ``token`` per line; blank lines and ``#`` comments skipped."""
    tokens = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep:
            name, token = DEFAULT_NAME, line
        tokens.append((name.strip(), token.strip()))
    return tokens


class AdminTokens:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        for name, token in tokens:
            if not _NAME.fullmatch(name):
                raise AdminConfigError(f"admin token name {name!r}: 1-64 of A-Z a-z 0-9 _ . @ -")
            if len(token) < MIN_TOKEN_CHARS:
                raise AdminConfigError(
                    f"admin token {name!r} is shorter than {MIN_TOKEN_CHARS} characters "
                    "(make one with `openssl rand -hex 32`)"
                )
        self._tokens = [AdminToken(name, _digest(token)) for name, token in tokens]

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminTokens:
        tokens = []
        if settings.admin_token:
            tokens.append((DEFAULT_NAME, settings.admin_token))
        if settings.admin_token_file:
            path = Path(settings.admin_token_file)
            if not path.exists():
                # An optional Secret that was not created (Kubernetes): the API is off.
                audit_log.warning("admin token file %s does not exist: admin API off", path)
            else:
                try:
                    text = path.read_text()
                except OSError as exc:
                    raise AdminConfigError(f"cannot read IM_ADMIN_TOKEN_FILE: {exc}") from exc
                tokens += parse_token_lines(text)
        return cls(tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def match(self, presented: str) -> str | None:
        """The name of the token ``presented`` is, or None. Every configured token is
        compared, whatever matched, so the time taken tells nothing."""
        digest = _digest(presented)
        found = None
        for token in self._tokens:
            if hmac.compare_digest(digest, token.digest):
                found = token.name
        return found


def claimed_actor(value: str | None) -> str:
    """The operator a caller says it is, made safe for one log line."""
    if not value:
        return ""
    return _ACTOR_UNSAFE.sub("_", value.strip())[:MAX_ACTOR_CHARS]


@dataclass(frozen=True, slots=True)
class Operator:
    """Who performs an admin action, as the audit log names it."""

    token: str  # the admin token's name
    claimed: str  # X-Admin-Actor / x-admin-actor, as the caller said
    address: str
    via: str  # "rest" or "grpc"

    def __str__(self) -> str:
        who = f"{self.token}({self.claimed})" if self.claimed else self.token
        return f"{who}@{self.address} via {self.via}"


class AdminGuard:
    """Checks admin tokens, with backoff per client address after failures."""

    def __init__(
        self,
        settings: Settings,
        tokens: AdminTokens,
        limiter: Callable[[], RateLimiter],
        degrade: Degrade,
    ) -> None:
        self.tokens = tokens
        self._limiter = limiter  # looked up per call: tests swap the backends
        self._degrade = degrade
        self._backoff = Backoff(
            settings.admin_failures_per_address,
            settings.login_failure_window_seconds,
            settings.login_backoff_base_seconds,
            settings.login_backoff_max_seconds,
        )

    async def check(self, presented: str | None, address: str, claimed: str, via: str) -> Operator:
        """The operator, or AdminRefused / RateLimited (both logged to the audit log)."""
        if not self.tokens.enabled:
            raise AdminRefused(
                "off", "the admin API is off: set IM_ADMIN_TOKEN or IM_ADMIN_TOKEN_FILE"
            )
        key = f"admin:{address_key(address)}"
        limited = self._backoff.allowed > 0
        if limited:
            wait = await self._degrade(
                "rate limiter",
                self._limiter().blocked([key]),
                0.0,
                "wrong admin tokens are not limited",
            )
            if wait > 0:
                audit_log.warning("admin refused: %s waits after wrong tokens (%s)", address, via)
                raise RateLimited(wait, "too many wrong admin tokens from this address")
        name = self.tokens.match(presented or "") if presented else None
        if name is None:
            if limited:
                await self._degrade(
                    "rate limiter",
                    self._limiter().fail(key, self._backoff),
                    0.0,
                    "wrong admin tokens are not limited",
                )
            audit_log.warning(
                "admin refused: %s admin token from %s (%s)",
                "wrong" if presented else "no",
                address,
                via,
            )
            raise AdminRefused("unauthorized", "a valid admin token is required")
        return Operator(name, claimed, address, via)


@contextlib.contextmanager
def audited(operator: Operator, action: str, target: str) -> Iterator[dict[str, Any]]:
    """Audits the action run in the block: "ok" with the details the block put in
    the dict, or how it failed (the error goes on)."""
    details: dict[str, Any] = {}
    try:
        yield details
    except Exception as exc:
        status = getattr(exc, "status", None)
        code = getattr(exc, "code", None)
        why = f"{status} {code}" if status is not None else type(exc).__name__
        audit(operator, action, target, f"failed ({why})")
        raise
    audit(operator, action, target, "ok", **details)


def audit(operator: Operator, action: str, target: str, result: str, **details: Any) -> None:
    """One line per admin action: who, what, on whom, how it ended."""
    extra = "".join(f" {k}={v}" for k, v in details.items())
    audit_log.info("admin %s %s by %s: %s%s", action, target, operator, result, extra)
