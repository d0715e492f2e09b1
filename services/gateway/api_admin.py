"""Admin routes of the gateway (``/v1/admin``), for operators: disable, enable, reset
a password, delete a user, list a user's sessions, bulk import. Authenticated by an
admin token (``Authorization: Bearer <admin token>``), never by a user's access token;
every action is one line of the audit log. Included by ``api.create_app``; see
docs/rest-api.md, "Admin"."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from im.validation import MAX_INT64
from services.gateway.admin_auth import (
    AdminRefused,
    Operator,
    audited,
    claimed_actor,
)
from services.gateway.admin_models import (
    AdminUser,
    AdminUserResult,
    AdminUsers,
    DeleteResult,
    ImportBody,
    ImportResult,
    ImportUserIn,
    ResetPasswordBody,
    ResetPasswordResult,
    SessionsResult,
    admin_user,
    import_result,
    import_users_pb,
    sessions_result,
)
from services.gateway.deps import GatewayDep
from services.gateway.errors import ApiError, rate_limited, unauthorized
from services.gateway.inputs import UserIdPath
from services.gateway.limits import RateLimited
from services.gateway.problems import problem_responses

IMPORT_PATH = "/v1/admin/users/import"
ACTOR_HEADER = "X-Admin-Actor"

router = APIRouter()
_admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="An admin token (IM_ADMIN_TOKEN / IM_ADMIN_TOKEN_FILE), not a user's token.",
)


async def _operator(
    gateway: GatewayDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> Operator:
    address = gateway.limits.address_of(request)
    presented = credentials.credentials if credentials is not None else None
    actor = claimed_actor(request.headers.get(ACTOR_HEADER))
    try:
        return await gateway.admin_guard.check(presented, address, actor, "rest")
    except AdminRefused as exc:
        if exc.kind == "off":
            raise ApiError(403, "admin_api_disabled", exc.detail) from None
        raise unauthorized(exc.detail) from None
    except RateLimited as exc:
        raise rate_limited(exc) from None


AdminAuth = Annotated[Operator, Depends(_operator)]
_AUTH_PROBLEMS = (401, 403, 429, 503)


def _target(user_id: int) -> str:
    return f"user:{user_id}"


@router.get(
    "/v1/admin/users",
    response_model=AdminUsers,
    tags=["admin"],
    responses=problem_responses(*_AUTH_PROBLEMS, 422),
)
async def find_users(
    gateway: GatewayDep,
    operator: AdminAuth,
    username: Annotated[
        str | None, Query(min_length=1, max_length=64, description="Exact username.")
    ] = None,
    user_id: Annotated[int | None, Query(gt=0, le=MAX_INT64, description="User id.")] = None,
) -> AdminUsers:
    """A user by username or id, with its disabled and deleted flags."""
    if (username is None) == (user_id is None):
        raise ApiError(422, "invalid_request", "give username or user_id")
    users = await gateway.get_users(
        user_ids=[user_id] if user_id else [], usernames=[username] if username else []
    )
    return AdminUsers(users=[admin_user(u) for u in users])


@router.post(
    "/v1/admin/users/{user_id}/disable",
    response_model=AdminUserResult,
    tags=["admin"],
    responses=problem_responses(*_AUTH_PROBLEMS, 404, 422),
)
async def disable(gateway: GatewayDep, operator: AdminAuth, user_id: UserIdPath) -> AdminUserResult:
    """Disable the user: logins are refused, every session ends at once (its access and
    refresh tokens stop working) and every socket of the user is kicked."""
    with audited(operator, "disable", _target(user_id)) as details:
        done = await gateway.admin.disable(user_id)
        details["sessions_ended"] = done.sessions_ended
    return AdminUserResult(user=admin_user(done.user), sessions_ended=done.sessions_ended)


@router.post(
    "/v1/admin/users/{user_id}/enable",
    response_model=AdminUserResult,
    tags=["admin"],
    responses=problem_responses(*_AUTH_PROBLEMS, 404, 409, 422),
)
async def enable(gateway: GatewayDep, operator: AdminAuth, user_id: UserIdPath) -> AdminUserResult:
    """Enable a disabled user again (409 `user_deleted` for a deleted one)."""
    with audited(operator, "enable", _target(user_id)):
        done = await gateway.admin.enable(user_id)
    return AdminUserResult(user=admin_user(done.user), sessions_ended=0)


@router.post(
    "/v1/admin/users/{user_id}/reset-password",
    response_model=ResetPasswordResult,
    response_model_exclude_none=True,
    tags=["admin"],
    responses=problem_responses(*_AUTH_PROBLEMS, 404, 409, 422),
)
async def reset_password(
    gateway: GatewayDep,
    operator: AdminAuth,
    user_id: UserIdPath,
    body: ResetPasswordBody | None = None,
) -> ResetPasswordResult:
    """Set a new password (the one given, or a generated one answered once) and end
    every session of the user."""
    given = body.password if body is not None and body.password else ""
    with audited(operator, "reset-password", _target(user_id)) as details:
        done = await gateway.admin.reset_password(user_id, given)
        details.update(sessions_ended=done.sessions_ended, generated=not given)
    return ResetPasswordResult(
        user=admin_user(done.user),
        sessions_ended=done.sessions_ended,
        password=done.generated_password or None,
    )


@router.delete(
    "/v1/admin/users/{user_id}",
    response_model=DeleteResult,
    tags=["admin"],
    responses=problem_responses(*_AUTH_PROBLEMS, 404, 422),
)
async def delete_user(
    gateway: GatewayDep,
    operator: AdminAuth,
    user_id: UserIdPath,
    erase_messages: Annotated[
        bool, Query(description="Also erase the bodies of every message the user sent.")
    ] = False,
) -> DeleteResult:
    """Delete the user: username and display name replaced (`deleted:<id>`, "Deleted
    user"), password removed, every session ended and socket kicked. Messages are kept
    and show the deleted user as sender, unless `erase_messages=true`: then their
    bodies are erased (content type `application/vnd.im.erased`). The user leaves every
    group (one it owns passes to its first admin, else member; one it is alone in is
    dissolved). Repeatable."""
    with audited(operator, "delete", _target(user_id)) as details:
        done = await gateway.admin.delete(user_id, erase_messages)
        details.update(
            sessions_ended=done.sessions_ended,
            messages_erased=done.messages_erased,
            groups_left=done.groups_left,
        )
    return DeleteResult(
        user=admin_user(done.user),
        sessions_ended=done.sessions_ended,
        messages_erased=done.messages_erased,
        groups_left=done.groups_left,
    )


@router.get(
    "/v1/admin/users/{user_id}/sessions",
    response_model=SessionsResult,
    tags=["admin"],
    responses=problem_responses(*_AUTH_PROBLEMS, 404, 422),
)
async def sessions(gateway: GatewayDep, operator: AdminAuth, user_id: UserIdPath) -> SessionsResult:
    """The user's open sessions: device, login and last refresh, and the connector
    holding the device's socket when it is online."""
    with audited(operator, "sessions", _target(user_id)):
        listed = await gateway.admin.sessions(user_id)
    return sessions_result(listed)


_IMPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["users"],
    "properties": {
        "users": {"type": "array", "maxItems": 10_000, "items": ImportUserIn.model_json_schema()}
    },
}


@router.post(
    IMPORT_PATH,
    response_model=ImportResult,
    tags=["admin"],
    responses=problem_responses(*_AUTH_PROBLEMS, 413, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _IMPORT_SCHEMA}},
        }
    },
)
async def import_users(gateway: GatewayDep, operator: AdminAuth, request: Request) -> ImportResult:
    """Create up to 10,000 users at once, each with an argon2 `password_hash` (stored as
    it is: thousands a second), a plain `password` (hashed here: slow) or neither (no
    login until a password reset). Rows that cannot be imported (username taken or
    repeated, invalid) are listed in `errors`; the others are imported all the same.
    The body may be up to IM_ADMIN_IMPORT_MAX_BYTES; it is read only after the token
    was checked."""
    try:
        body = ImportBody.model_validate_json(await request.body())
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ApiError(422, "invalid_request", detail or "invalid import body") from None
    with audited(operator, "import", f"users:{len(body.users)}") as details:
        response = await gateway.admin.import_users(import_users_pb(body))
        details.update(imported=len(response.imported), refused=len(response.errors))
    return import_result(response)


@router.get(
    "/v1/admin/users/{user_id}",
    response_model=AdminUser,
    tags=["admin"],
    responses=problem_responses(*_AUTH_PROBLEMS, 404, 422),
)
async def get_user(gateway: GatewayDep, operator: AdminAuth, user_id: UserIdPath) -> AdminUser:
    """A user by id, with its disabled and deleted flags."""
    return admin_user(await gateway.get_user(user_id))
