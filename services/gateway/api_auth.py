"""Auth routes of the gateway: register, log in, log out. The other session routes
(refresh, logout everywhere, password change) are in ``api_sessions``; see
docs/rest-api.md."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from services.gateway.deps import Auth, GatewayDep
from services.gateway.models import (
    LoginRequest,
    LoginResponse,
    RegisteredUser,
    RegisterRequest,
    login_response,
)
from services.gateway.problems import problem_responses

router = APIRouter()


@router.post(
    "/v1/auth/register",
    status_code=201,
    response_model=RegisteredUser,
    tags=["auth"],
    responses=problem_responses(409, 422, 429, 503),
)
async def register(gateway: GatewayDep, body: RegisterRequest, request: Request) -> RegisteredUser:
    """Create a user. Registrations per client address are limited (429)."""
    address = gateway.limits.address_of(request)
    u = await gateway.register(body.username, body.password, body.display_name, address)
    return RegisteredUser(user_id=u.user_id, username=u.username, display_name=u.display_name)


@router.post(
    "/v1/auth/login",
    response_model=LoginResponse,
    tags=["auth"],
    responses=problem_responses(401, 422, 429, 503),
)
async def login(gateway: GatewayDep, body: LoginRequest, request: Request) -> LoginResponse:
    """Check the password, issue an access and a refresh token and assign a connector.
    Failed logins back off per (username, client address) and per address (429)."""
    address = gateway.limits.address_of(request)
    r = await gateway.login(body.username, body.password, body.device_id, address)
    return login_response(r)


@router.post(
    "/v1/auth/logout",
    status_code=204,
    response_class=Response,
    tags=["auth"],
    responses=problem_responses(401, 503),
)
async def logout(gateway: GatewayDep, claims: Auth) -> Response:
    """Revoke this token's session and kick the connection using it."""
    await gateway.logout(claims)
    return Response(status_code=204)
