"""Session routes of the gateway: refresh, logout everywhere, password change.
Included by ``api.create_app``; see docs/rest-api.md."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from services.gateway.deps import Auth, GatewayDep
from services.gateway.models import LoginResponse, login_response
from services.gateway.problems import problem_responses

MAX_REFRESH_TOKEN_CHARS = 128  # ours are 43; anything longer is not one of them
MAX_PASSWORD_CHARS = 1024  # as at login: the user service refuses beyond its own bound

router = APIRouter()


class RefreshRequest(BaseModel):
    refresh_token: str = Field(
        min_length=1,
        max_length=MAX_REFRESH_TOKEN_CHARS,
        description="The refresh token of the last login or refresh.",
    )


class PasswordChange(BaseModel):
    current_password: str = Field(
        min_length=1, max_length=MAX_PASSWORD_CHARS, description="The password now."
    )
    new_password: str = Field(
        min_length=1,
        max_length=MAX_PASSWORD_CHARS,
        description="The new password (the user service's length rules apply).",
    )


@router.post(
    "/v1/auth/refresh",
    response_model=LoginResponse,
    tags=["auth"],
    responses=problem_responses(401, 422, 429, 503),
)
async def refresh(gateway: GatewayDep, body: RefreshRequest, request: Request) -> LoginResponse:
    """Trade a refresh token for a new access token, a new refresh token and a
    connector, in the same session. The old refresh token is spent: presented again,
    it ends the session (someone copied it). 401 for an unknown, expired or revoked one."""
    address = gateway.limits.address_of(request)
    return login_response(await gateway.refresh(body.refresh_token, address))


@router.post(
    "/v1/auth/logout-all",
    status_code=204,
    response_class=Response,
    tags=["auth"],
    responses=problem_responses(401, 503),
)
async def logout_all(gateway: GatewayDep, claims: Auth) -> Response:
    """End every session of the user, this one included: their access and refresh
    tokens stop working and their sockets are kicked."""
    await gateway.logout_all(claims)
    return Response(status_code=204)


@router.post(
    "/v1/users/me/password",
    status_code=204,
    response_class=Response,
    tags=["users"],
    responses=problem_responses(401, 422, 429, 503),
)
async def change_password(
    gateway: GatewayDep, claims: Auth, body: PasswordChange, request: Request
) -> Response:
    """Set a new password, given the current one (401 `invalid_credentials` when
    wrong; wrong ones back off like failed logins). Every other session ends; this
    one goes on."""
    address = gateway.limits.address_of(request)
    await gateway.change_password(claims, body.current_password, body.new_password, address)
    return Response(status_code=204)
