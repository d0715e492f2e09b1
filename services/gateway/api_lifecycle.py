"""Group lifecycle routes: rename, describe, avatar, transfer, dissolve; invite links,
joining by link, join requests. See docs/rest-api.md."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path

from services.gateway.deps import Auth, GatewayDep, GroupId, MemberId
from services.gateway.errors import ApiError
from services.gateway.lifecycle_models import (
    DecisionOut,
    GroupInfoRequest,
    InviteList,
    InviteOut,
    InviteRequest,
    JoinOut,
    JoinRequestBody,
    JoinRequestList,
    TransferRequest,
    invite_out,
    join_request_out,
)
from services.gateway.models import GroupOut, group_out
from services.gateway.problems import problem_responses

router = APIRouter()

LinkId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="An invite link's id.")]
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@router.patch(
    "/v1/groups/{group_id}",
    response_model=GroupOut,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def update_group(
    gateway: GatewayDep, claims: Auth, group_id: GroupId, body: GroupInfoRequest
) -> GroupOut:
    """Rename the group, change its description or avatar (owner or admin). Each
    change appears in the group as a system event."""
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise ApiError(422, "invalid_request", "give name, description or avatar")
    view = await gateway.lifecycle_ops.update_info(claims.user_id, group_id, changes)
    return group_out(view)


@router.post(
    "/v1/groups/{group_id}/transfer",
    response_model=GroupOut,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def transfer_group(
    gateway: GatewayDep, claims: Auth, group_id: GroupId, body: TransferRequest
) -> GroupOut:
    """Make another member the owner (owner only); the caller becomes an admin, who
    can then leave."""
    return group_out(await gateway.lifecycle_ops.transfer(claims.user_id, group_id, body.user_id))


@router.post(
    "/v1/groups/{group_id}/dissolve",
    response_model=GroupOut,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def dissolve_group(gateway: GatewayDep, claims: Auth, group_id: GroupId) -> GroupOut:
    """Dissolve the group (owner only): no more sends, joins or changes; members keep
    reading its history. Dissolving again changes nothing."""
    return group_out(await gateway.lifecycle_ops.dissolve(claims.user_id, group_id))


@router.post(
    "/v1/groups/{group_id}/invites",
    status_code=201,
    response_model=InviteOut,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def create_invite(
    gateway: GatewayDep, claims: Auth, group_id: GroupId, body: InviteRequest
) -> InviteOut:
    """Create an invite link (owner or admin). Its `token` is shown only here."""
    expires_at = gateway.lifecycle_clock.wall_ms() + body.expires_in_seconds * 1000
    link = await gateway.lifecycle_ops.create_link(
        claims.user_id, group_id, expires_at, body.max_uses, body.approval_required
    )
    return invite_out(link)


@router.get(
    "/v1/groups/{group_id}/invites",
    response_model=InviteList,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def list_invites(gateway: GatewayDep, claims: Auth, group_id: GroupId) -> InviteList:
    """The group's invite links, revoked and expired ones included (owner or admin)."""
    links = await gateway.lifecycle_ops.list_links(claims.user_id, group_id)
    return InviteList(invites=[invite_out(link) for link in links])


@router.delete(
    "/v1/groups/{group_id}/invites/{link_id}",
    response_model=InviteOut,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def revoke_invite(
    gateway: GatewayDep, claims: Auth, group_id: GroupId, link_id: LinkId
) -> InviteOut:
    """Revoke an invite link (owner or admin): it no longer lets anyone join."""
    return invite_out(await gateway.lifecycle_ops.revoke_link(claims.user_id, group_id, link_id))


@router.post(
    "/v1/groups/join",
    response_model=JoinOut,
    tags=["groups"],
    responses=problem_responses(401, 404, 409, 410, 422, 503),
)
async def join_group(gateway: GatewayDep, claims: Auth, body: JoinRequestBody) -> JoinOut:
    """Join a group with an invite link's token, or, when the link needs approval,
    ask to join (`status: pending`). 404 `invite_not_found`: unknown or revoked;
    410 `invite_unusable`: expired, used up, or the group is dissolved or full."""
    if not _TOKEN.match(body.token):
        raise ApiError(404, "invite_not_found", "no such invite link (unknown or revoked)")
    result = await gateway.lifecycle_ops.join(claims.user_id, body.token)
    c = result.conversation
    return JoinOut(conversation_id=c.conversation_id, name=c.name, status=result.status)  # type: ignore[arg-type]


@router.get(
    "/v1/groups/{group_id}/join-requests",
    response_model=JoinRequestList,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def list_join_requests(
    gateway: GatewayDep, claims: Auth, group_id: GroupId
) -> JoinRequestList:
    """Pending join requests (owner or admin)."""
    found = await gateway.lifecycle_ops.list_requests(claims.user_id, group_id)
    return JoinRequestList(requests=[join_request_out(r) for r in found])


@router.post(
    "/v1/groups/{group_id}/join-requests/{user_id}/approve",
    response_model=DecisionOut,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def approve_join_request(
    gateway: GatewayDep, claims: Auth, group_id: GroupId, user_id: MemberId
) -> DecisionOut:
    """Let the user in (owner or admin)."""
    joined = await gateway.lifecycle_ops.decide(claims.user_id, group_id, user_id, True)
    return DecisionOut(joined=joined)


@router.post(
    "/v1/groups/{group_id}/join-requests/{user_id}/reject",
    response_model=DecisionOut,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def reject_join_request(
    gateway: GatewayDep, claims: Auth, group_id: GroupId, user_id: MemberId
) -> DecisionOut:
    """Turn the request down (owner or admin); the user may ask again."""
    await gateway.lifecycle_ops.decide(claims.user_id, group_id, user_id, False)
    return DecisionOut(joined=False)
