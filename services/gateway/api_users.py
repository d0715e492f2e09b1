"""User routes of the gateway: the caller, a user by id or by username."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.gateway.deps import Auth, GatewayDep
from services.gateway.inputs import UserIdPath
from services.gateway.models import UserList, UserOut, UserView, user_out
from services.gateway.problems import problem_responses

router = APIRouter()


@router.get(
    "/v1/users/me",
    response_model=UserOut,
    tags=["users"],
    responses=problem_responses(401, 404, 503),
)
async def me(gateway: GatewayDep, claims: Auth) -> UserOut:
    """The logged-in user."""
    return user_out(await gateway.get_user(claims.user_id))


@router.get(
    "/v1/users/{user_id}",
    response_model=UserView,
    tags=["users"],
    responses=problem_responses(401, 404, 422, 503),
)
async def user_by_id(gateway: GatewayDep, claims: Auth, user_id: UserIdPath) -> UserView:
    """A user by id, with whether you blocked them."""
    out = UserView(**user_out(await gateway.get_user(user_id)).model_dump())
    if user_id != claims.user_id:
        out.blocked = await gateway.privacy_ops.is_blocked_by_me(claims.user_id, user_id)
    return out


@router.get(
    "/v1/users", response_model=UserList, tags=["users"], responses=problem_responses(401, 422, 503)
)
async def users_by_name(
    gateway: GatewayDep,
    _auth: Auth,
    username: Annotated[str, Query(min_length=1, max_length=64, description="Exact username.")],
) -> UserList:
    """Find a user by username."""
    users = await gateway.get_users(usernames=[username])
    return UserList(users=[user_out(u) for u in users])
