"""How the gateway calls what it depends on: the user and group services over gRPC,
the port adapters and the bus, and what each kind of failure becomes (an
``ApiError``, a 503, or a degraded answer). Shared by ``Gateway`` and its parts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc

from im.ports import Backends
from services.gateway.errors import ApiError, rpc_error

log = logging.getLogger("im.gateway")

T = TypeVar("T")

# Bus notifications follow a change that is already committed: a slow broker must not
# hold the REST answer (routers and connectors also revalidate by member_version/TTL).
PUBLISH_TIMEOUT = 2.0
DEGRADED_LOG_EVERY = 10.0


class Calls:
    """The call wrappers; one per gateway, so the degraded-log throttle is shared."""

    def __init__(self, backends: Backends, rpc_timeout: float) -> None:
        self._backends = backends
        self._timeout = rpc_timeout
        self._degraded_logged: dict[str, float] = {}

    async def rpc(
        self,
        call: Any,
        request: Any,
        overrides: dict[grpc.StatusCode, tuple[int, str]] | None = None,
    ) -> Any:
        try:
            return await call(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, overrides) from exc

    async def publish(self, topic: str, key: str, record: Any) -> None:
        """Best effort: the change is already committed, so a failure here must not
        turn a success into an error. Routers and connectors revalidate membership by
        member_version and TTL, and receipts can always be pulled, so a lost record
        only delays what others see."""
        try:
            await asyncio.wait_for(
                self._backends.bus.publish(topic, key, record.SerializeToString()),
                PUBLISH_TIMEOUT,
            )
        except Exception as exc:
            log.warning("could not publish %s for %s: %r", type(record).__name__, key, exc)

    @staticmethod
    async def backend(what: str, op: Awaitable[T]) -> T:
        """A call into a port adapter (Redis, ZooKeeper, the message store): failures
        become 503 so clients retry, instead of a 500 that looks like our bug."""
        try:
            return await op
        except ApiError:
            raise
        except Exception as exc:
            log.warning("%s failed: %r", what, exc)
            raise ApiError(503, "unavailable", f"{what} is unavailable; retry later") from exc

    async def degraded(self, what: str, op: Awaitable[T], fallback: T, consequence: str) -> T:
        """A call whose answer only sharpens a request (a revocation check, a rate
        limit): when its backend is down, go on without it, and say so in the log
        (at most every DEGRADED_LOG_EVERY seconds per backend), rather than turn every
        request away while, say, Redis restarts."""
        try:
            return await op
        except Exception as exc:
            now = time.monotonic()
            if now - self._degraded_logged.get(what, -DEGRADED_LOG_EVERY) >= DEGRADED_LOG_EVERY:
                self._degraded_logged[what] = now
                log.warning("%s unavailable (%r): %s", what, exc, consequence)
            return fallback
