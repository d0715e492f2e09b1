"""Blocking and privacy routes: block and unblock a user, the caller's block list, and
the caller's privacy settings. See docs/rest-api.md."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from services.gateway.deps import Auth, GatewayDep
from services.gateway.inputs import UserIdPath
from services.gateway.problems import problem_responses

router = APIRouter()


class BlockList(BaseModel):
    user_ids: list[int] = Field(description="Users the caller blocked, ascending.")


class PrivacyOut(BaseModel):
    invites_from_contacts_only: bool = Field(
        description="Only contacts may add the user to groups: users with a 1:1 "
        "conversation with them in which they have read something."
    )


class PrivacyPatch(BaseModel):
    model_config = {"extra": "forbid"}

    invites_from_contacts_only: bool | None = Field(
        default=None, description="Take group invites from contacts only."
    )


@router.put(
    "/v1/users/{user_id}/block",
    status_code=204,
    response_class=Response,
    tags=["privacy"],
    responses=problem_responses(401, 404, 422, 503),
)
async def block(gateway: GatewayDep, claims: Auth, user_id: UserIdPath) -> Response:
    """Block a user: no 1:1 messages between you (either way), no group invites from
    them, no presence. They are not told; their sends to you are refused with a
    neutral FORBIDDEN. Idempotent."""
    await gateway.privacy_ops.block(claims.user_id, user_id)
    return Response(status_code=204)


@router.delete(
    "/v1/users/{user_id}/block",
    status_code=204,
    response_class=Response,
    tags=["privacy"],
    responses=problem_responses(401, 404, 422, 503),
)
async def unblock(gateway: GatewayDep, claims: Auth, user_id: UserIdPath) -> Response:
    """Unblock a user. Idempotent."""
    await gateway.privacy_ops.unblock(claims.user_id, user_id)
    return Response(status_code=204)


@router.get(
    "/v1/users/me/blocks",
    response_model=BlockList,
    tags=["privacy"],
    responses=problem_responses(401, 503),
)
async def blocks(gateway: GatewayDep, claims: Auth) -> BlockList:
    """The users you blocked."""
    return BlockList(user_ids=await gateway.privacy_ops.blocked(claims.user_id))


@router.get(
    "/v1/users/me/privacy",
    response_model=PrivacyOut,
    tags=["privacy"],
    responses=problem_responses(401, 503),
)
async def privacy(gateway: GatewayDep, claims: Auth) -> PrivacyOut:
    """Your privacy settings."""
    settings = await gateway.privacy_ops.privacy(claims.user_id)
    return PrivacyOut(invites_from_contacts_only=settings.invites_from_contacts_only)


@router.patch(
    "/v1/users/me/privacy",
    response_model=PrivacyOut,
    tags=["privacy"],
    responses=problem_responses(401, 422, 503),
)
async def set_privacy(gateway: GatewayDep, claims: Auth, body: PrivacyPatch) -> PrivacyOut:
    """Change your privacy settings; fields left out keep their value."""
    ops = gateway.privacy_ops
    current = await ops.privacy(claims.user_id)
    wanted = current.invites_from_contacts_only
    if body.invites_from_contacts_only is not None:
        wanted = body.invites_from_contacts_only
    settings = await ops.set_privacy(claims.user_id, wanted)
    return PrivacyOut(invites_from_contacts_only=settings.invites_from_contacts_only)
