"""The gateway's errors: ``ApiError`` carries a stable problem code and leaves as
application/problem+json (``problems.py``); here too what a failed user/group call or
a rate limit becomes."""

from __future__ import annotations

import logging
from typing import Any

import grpc

from services.gateway.limits import RateLimited

log = logging.getLogger("im.gateway")


class ApiError(Exception):
    """An error with a stable problem code, rendered as application/problem+json.

    ``extra`` adds RFC 9457 extension members (e.g. ``user_ids`` of ``unknown_users``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.extra = extra


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, {"WWW-Authenticate": "Bearer"})


def forbidden(detail: str = "not a member of this conversation") -> ApiError:
    return ApiError(403, "forbidden", detail)


def cannot_write() -> ApiError:
    # Neutral, as on the socket: a blocked sender is not told of the block.
    return forbidden("you cannot send to this conversation")


def group_dissolved() -> ApiError:
    return ApiError(409, "group_dissolved", "the group is dissolved: it is read-only")


def no_such_group() -> ApiError:
    return ApiError(404, "not_found", "no such group")


_GRPC_ERRORS: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.ALREADY_EXISTS: (409, "username_taken"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "invalid_credentials"),
    grpc.StatusCode.INVALID_ARGUMENT: (422, "invalid_request"),
    grpc.StatusCode.FAILED_PRECONDITION: (422, "invalid_request"),
    grpc.StatusCode.OUT_OF_RANGE: (422, "invalid_request"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "forbidden"),
    grpc.StatusCode.UNAVAILABLE: (503, "unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (503, "unavailable"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (503, "unavailable"),
    grpc.StatusCode.CANCELLED: (503, "unavailable"),
    grpc.StatusCode.ABORTED: (503, "unavailable"),
}


def rpc_error(
    exc: grpc.aio.AioRpcError, overrides: dict[grpc.StatusCode, tuple[int, str]] | None = None
) -> ApiError:
    """The problem a failed user/group call becomes. ``overrides`` give a status a
    more precise meaning for one call (FAILED_PRECONDITION of AddMembers is a full
    group, of RemoveMember the owner leaving)."""
    code = exc.code()
    mapped = (overrides or {}).get(code) or _GRPC_ERRORS.get(code)
    if mapped is None:
        # INTERNAL, UNKNOWN, ...: a bug on the other side; its text stays in our log.
        log.error("backend call failed: %s %s", code, exc.details())
        return ApiError(500, "internal", "internal error")
    status, problem = mapped
    if status == 503:
        log.warning("backend unavailable: %s %s", code, exc.details())
        return ApiError(503, "unavailable", "a backend service is unavailable; retry later")
    if status == 401:
        return ApiError(401, "invalid_credentials", "wrong username or password")
    # The other services' messages describe the caller's mistake (e.g. username shape).
    return ApiError(status, problem, exc.details() or problem)


def rate_limited(exc: RateLimited) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        exc.detail,
        {"Retry-After": exc.retry_after_header},
        extra={"retry_after": int(exc.retry_after_header)},
    )
