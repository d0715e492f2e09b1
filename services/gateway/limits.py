"""Password-guessing and sign-up limits of the gateway, and who the client is.

Failed logins are counted per (username, client address) and per client address,
never per username alone: a per-username limit lets anyone lock the owner out with 30
wrong guesses, while these keys only slow down the address that guesses. Only
failures count; a success clears its (username, address) count but not the address's
(one account of its own must not buy an attacker a fresh allowance). Each failure
over an allowance doubles the wait (``im.ports.Backoff``). While a key waits, its
logins are answered 429 with Retry-After before the password is even checked.

Check and count are two calls, so a burst of parallel guesses can pass one check
together; each of them then counts, and the wait they earn doubles per guess.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import HTTPConnection

from im.config import Settings
from im.ports import Backoff, RateLimiter

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Calls the gateway's degrade wrapper: (what, call, fallback, consequence) -> result.
Degrade = Callable[[str, Awaitable[T], T, str], Awaitable[T]]

REGISTRATION_WINDOW = 3600.0
# An IPv6 client usually holds a whole /64: counting per address would give it 2**64
# fresh allowances.
IPV6_PREFIX = 64


class RateLimited(Exception):
    """The caller must wait ``retry_after`` seconds."""

    def __init__(self, retry_after: float, detail: str) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.detail = detail

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, rounded up, at least 1 (RFC 9110 delay-seconds)."""
        return str(max(1, math.ceil(self.retry_after)))


def parse_networks(spec: str) -> list[Network]:
    """``"10.0.0.0/8, ::1"`` -> networks; a bad entry is a configuration error."""
    networks = []
    for part in spec.split(","):
        part = part.strip()
        if part:
            networks.append(ipaddress.ip_network(part, strict=False))
    return networks


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: str | None, trusted: list[Network]) -> str:
    """The client's address: the TCP peer, unless the peer is a trusted proxy.

    Then ``X-Forwarded-For`` is read from the right (each proxy appends the address it
    saw), skipping trusted proxies; the first address that is not one is the client.
    Entries left of it were written by the client itself and prove nothing.
    """
    address = _ip(peer or "")
    if address is None:
        return peer or "unknown"
    if not forwarded_for or not _trusted(address, trusted):
        return str(address)
    for hop in reversed(forwarded_for.split(",")):
        candidate = _ip(hop)
        if candidate is None:
            break  # garbage: keep the last hop we could vouch for
        address = candidate
        if not _trusted(candidate, trusted):
            break
    return str(address)


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: list[Network]
) -> bool:
    return any(address in network for network in trusted)


def address_key(address: str) -> str:
    """The rate-limit key of an address: IPv6 by its /64, IPv4 as it is."""
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return address


class LoginLimits:
    """Failed-login backoff and the registration limit, on the RateLimiter port.

    A limiter that is down never refuses anyone: ``degrade`` logs and goes on.
    """

    def __init__(
        self, settings: Settings, limiter: Callable[[], RateLimiter], degrade: Degrade
    ) -> None:
        self._settings = settings
        self._limiter = limiter  # looked up per call: tests swap the backends
        self._degrade = degrade
        window = settings.login_failure_window_seconds
        base, cap = settings.login_backoff_base_seconds, settings.login_backoff_max_seconds
        self._pair = Backoff(settings.login_failures_per_user_address, window, base, cap)
        self._address = Backoff(settings.login_failures_per_address, window, base, cap)
        self.trusted_proxies = parse_networks(settings.trusted_proxies)

    def address_of(self, request: HTTPConnection) -> str:
        """The client address of a request (see ``client_address``)."""
        peer = request.client.host if request.client else None
        # Several header lines mean the same as one comma-joined line.
        forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
        return client_address(peer, forwarded, self.trusted_proxies)

    def _keys(self, who: str, address: str) -> list[tuple[str, Backoff]]:
        addr = address_key(address)
        keys = []
        if self._pair.allowed > 0:
            keys.append((f"login:{who.lower()}|{addr}", self._pair))
        if self._address.allowed > 0:
            keys.append((f"login-addr:{addr}", self._address))
        return keys

    async def check(self, who: str, address: str) -> None:
        """Raises RateLimited while (who, address) or the address must wait."""
        keys = [key for key, _ in self._keys(who, address)]
        if not keys:
            return
        wait = await self._degrade(
            "rate limiter",
            self._limiter().blocked(keys),
            0.0,
            "failed logins are not limited",
        )
        if wait > 0:
            raise RateLimited(wait, "too many failed logins from this address; retry later")

    async def failed(self, who: str, address: str) -> None:
        for key, backoff in self._keys(who, address):
            await self._degrade(
                "rate limiter",
                self._limiter().fail(key, backoff),
                0.0,
                "failed logins are not limited",
            )

    async def succeeded(self, who: str, address: str) -> None:
        keys = self._keys(who, address)
        if keys and keys[0][1] is self._pair:
            await self._degrade(
                "rate limiter",
                self._limiter().forgive(keys[0][0]),
                None,
                "failed logins are not limited",
            )

    async def register(self, address: str) -> None:
        """Counts one registration attempt of the address; raises RateLimited past the
        hourly limit. Every attempt counts: each one costs a password hash."""
        limit = self._settings.registrations_per_address_per_hour
        if limit <= 0:
            return
        wait = await self._degrade(
            "rate limiter",
            self._limiter().hit(f"register:{address_key(address)}", limit, REGISTRATION_WINDOW),
            0.0,
            "registrations are not limited",
        )
        if wait > 0:
            raise RateLimited(wait, "too many registrations from this address; retry later")
