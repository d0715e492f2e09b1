"""Group routes of the gateway: create and look up groups, add, list, promote and
remove members, leave. See docs/rest-api.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.gateway.deps import Auth, GatewayDep, GroupId, MemberId
from services.gateway.inputs import PageCursor
from services.gateway.models import (
    AddedMembers,
    AddMembersRequest,
    CreateGroupRequest,
    GroupOut,
    MemberOut,
    MemberPage,
    RoleRequest,
    group_out,
    member_out,
)
from services.gateway.problems import problem_responses

router = APIRouter()


@router.post(
    "/v1/groups",
    status_code=201,
    response_model=GroupOut,
    tags=["groups"],
    responses=problem_responses(401, 409, 422, 503),
)
async def create_group(gateway: GatewayDep, claims: Auth, body: CreateGroupRequest) -> GroupOut:
    """Create a group; the caller becomes its owner."""
    view = await gateway.group_ops.create_group(
        claims.user_id, body.name, body.member_ids, body.history_visible
    )
    return group_out(view)


@router.get(
    "/v1/groups/{group_id}",
    response_model=GroupOut,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_group(gateway: GatewayDep, claims: Auth, group_id: GroupId) -> GroupOut:
    """A group and the caller's role in it. Members only."""
    return group_out(await gateway.group_ops.get_group(claims.user_id, group_id))


@router.post(
    "/v1/groups/{group_id}/members",
    response_model=AddedMembers,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def add_members(
    gateway: GatewayDep, claims: Auth, group_id: GroupId, body: AddMembersRequest
) -> AddedMembers:
    """Add members (owner or admin). They see messages sent from now on, or the
    whole history if the group was created with `history_visible`."""
    added = await gateway.group_ops.add_members(claims.user_id, group_id, body.user_ids)
    return AddedMembers(added=added)


@router.get(
    "/v1/groups/{group_id}/members",
    response_model=MemberPage,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def list_members(
    gateway: GatewayDep,
    claims: Auth,
    group_id: GroupId,
    cursor: PageCursor = "",
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
) -> MemberPage:
    """A page of members with their roles and cursors. Members only."""
    members, next_cursor = await gateway.group_ops.list_members(
        claims.user_id, group_id, cursor, limit
    )
    return MemberPage(members=[member_out(m) for m in members], next_cursor=next_cursor)


@router.patch(
    "/v1/groups/{group_id}/members/{user_id}",
    response_model=MemberOut,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def set_member_role(
    gateway: GatewayDep, claims: Auth, group_id: GroupId, user_id: MemberId, body: RoleRequest
) -> MemberOut:
    """Make a member an admin or a plain member again (owner only)."""
    return member_out(
        await gateway.group_ops.set_role(claims.user_id, group_id, user_id, body.role)
    )


@router.delete(
    "/v1/groups/{group_id}/members/{user_id}",
    status_code=204,
    response_class=Response,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def remove_member(
    gateway: GatewayDep, claims: Auth, group_id: GroupId, user_id: MemberId
) -> Response:
    """Remove a member (owner or admin; only the owner removes admins). Removing
    oneself is leaving."""
    await gateway.group_ops.remove_member(claims.user_id, group_id, user_id)
    return Response(status_code=204)


@router.post(
    "/v1/groups/{group_id}/leave",
    status_code=204,
    response_class=Response,
    tags=["groups"],
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def leave_group(gateway: GatewayDep, claims: Auth, group_id: GroupId) -> Response:
    """Leave the group (the owner cannot)."""
    await gateway.group_ops.leave_group(claims.user_id, group_id)
    return Response(status_code=204)
