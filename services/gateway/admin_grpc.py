"""The gateway's AdminService (im.v1.AdminService): the admin API over gRPC, for
internal callers (tools, automation inside the cluster).

Served on its own internal server (internal_host:admin_grpc_port) and only while an
admin token is configured. Two locks: the transport is the suite's mutual TLS (a
certificate of the internal CA), and each call carries the admin token in its
``authorization`` metadata ("Bearer <token>"), so a service certificate alone does not
make an operator. Same operations, limits and audit log as the REST routes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from im.config import Settings
from im.grpcutil import GrpcServer, grpc_security, service_name
from im.v1 import admin_pb2, admin_pb2_grpc
from services.gateway.admin import AdminOps
from services.gateway.admin_auth import AdminGuard, AdminRefused, Operator, audited, claimed_actor
from services.gateway.errors import ApiError
from services.gateway.limits import RateLimited

log = logging.getLogger("im.gateway")

_R = TypeVar("_R")
_STATUS = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            value = item.value
            return value.decode() if isinstance(value, bytes) else value
    return None


def _peer_address(context: grpc.aio.ServicerContext) -> str:
    # "ipv4:10.0.0.7:51234" / "ipv6:[::1]:51234" -> the address alone
    peer = context.peer() or "unknown"
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


Handler = Callable[[Any, Any, Operator], Awaitable[_R]]


def admin_call(action: str) -> Callable[[Handler[_R]], Callable[..., Awaitable[_R]]]:
    """Checks the token, audits the call, and turns refusals into gRPC statuses."""

    def decorate(handler: Handler[_R]) -> Callable[..., Awaitable[_R]]:
        @functools.wraps(handler)
        async def wrapper(
            self: AdminServicer, request: Any, context: grpc.aio.ServicerContext
        ) -> _R:
            try:
                operator = await self.guard.check(
                    _bearer(_metadata(context, "authorization")),
                    _peer_address(context),
                    claimed_actor(_metadata(context, "x-admin-actor")),
                    "grpc",
                )
                with audited(operator, action, _target(request)):
                    return await handler(self, request, operator)
            except AdminRefused as exc:
                code = grpc.StatusCode.UNAUTHENTICATED
                if exc.kind == "off":
                    code = grpc.StatusCode.PERMISSION_DENIED
                await context.abort(code, exc.detail)
            except RateLimited as exc:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.detail)
            except ApiError as exc:
                code = _STATUS.get(exc.status, grpc.StatusCode.INTERNAL)
                await context.abort(code, exc.detail)
            raise AssertionError("unreachable: context.abort raises")

        return wrapper

    return decorate


def _target(request: Any) -> str:
    if isinstance(request, admin_pb2.ImportUsersRequest):
        return f"users:{len(request.users)}"
    return f"user:{getattr(request, 'user_id', 0)}"


def _valid_id(user_id: int) -> int:
    if user_id <= 0:
        raise ApiError(422, "invalid_request", "user_id must be positive")
    return user_id


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, ops: AdminOps, guard: AdminGuard) -> None:
        self.ops = ops
        self.guard = guard

    @admin_call("disable")
    async def DisableUser(self, request: Any, operator: Operator) -> admin_pb2.AdminUserResponse:
        return await self.ops.disable(_valid_id(request.user_id))

    @admin_call("enable")
    async def EnableUser(self, request: Any, operator: Operator) -> admin_pb2.AdminUserResponse:
        return await self.ops.enable(_valid_id(request.user_id))

    @admin_call("reset-password")
    async def ResetPassword(
        self, request: Any, operator: Operator
    ) -> admin_pb2.ResetPasswordResponse:
        return await self.ops.reset_password(_valid_id(request.user_id), request.new_password)

    @admin_call("delete")
    async def DeleteUser(self, request: Any, operator: Operator) -> admin_pb2.DeleteUserResponse:
        return await self.ops.delete(_valid_id(request.user_id), request.erase_messages)

    @admin_call("sessions")
    async def ListSessions(
        self, request: Any, operator: Operator
    ) -> admin_pb2.ListSessionsResponse:
        return await self.ops.sessions(_valid_id(request.user_id))

    @admin_call("import")
    async def ImportUsers(self, request: Any, operator: Operator) -> admin_pb2.ImportUsersResponse:
        if len(request.users) > 10_000:
            raise ApiError(422, "invalid_request", "at most 10,000 users per import call")
        return await self.ops.import_users(list(request.users))


def admin_server(settings: Settings, servicer: AdminServicer) -> GrpcServer:
    """The internal server of the AdminService (not started)."""
    server = GrpcServer(
        settings.internal_host,
        settings.admin_grpc_port,
        security=grpc_security(settings),
        reflection=settings.grpc_reflection,
        port_setting="admin_grpc_port",
    )
    server.add(
        admin_pb2_grpc.add_AdminServiceServicer_to_server,
        servicer,
        service_name(admin_pb2, "AdminService"),
    )
    return server
