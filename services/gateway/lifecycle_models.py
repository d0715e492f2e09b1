"""Request and response bodies of the group lifecycle routes (api_lifecycle.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from im.db import GROUP_AVATAR_CHARS, GROUP_DESCRIPTION_CHARS
from im.v1 import group_pb2
from services.gateway.inputs import UserId

MAX_GROUP_NAME = 255
MAX_LINK_SECONDS = 30 * 24 * 3600
MAX_LINK_USES = 1_000_000


class GroupInfoRequest(BaseModel):
    """Only the fields given change. The group service checks the text (no control
    or bidi characters; newlines allowed in the description)."""

    name: str | None = Field(None, min_length=1, max_length=MAX_GROUP_NAME)
    description: str | None = Field(None, max_length=GROUP_DESCRIPTION_CHARS)
    avatar: str | None = Field(
        None,
        max_length=GROUP_AVATAR_CHARS,
        description="An https:// URL or an attachment id; empty removes it.",
    )


class TransferRequest(BaseModel):
    user_id: UserId = Field(description="The member who becomes the owner.")


class InviteRequest(BaseModel):
    expires_in_seconds: int = Field(
        7 * 24 * 3600,
        ge=60,
        le=MAX_LINK_SECONDS,
        description="Lifetime of the link (60 s to 30 days).",
    )
    max_uses: int = Field(
        0, ge=0, le=MAX_LINK_USES, description="Joins (or requests) it allows; 0: unlimited."
    )
    approval_required: bool = Field(
        False, description="A join files a request an owner or admin approves or rejects."
    )


class InviteOut(BaseModel):
    link_id: str = Field(description="The link's public handle (list, revoke).")
    conversation_id: str = Field(description="The group.")
    token: str | None = Field(
        description="The secret to join with; only in the answer that created the link."
    )
    created_by: int
    created_at: int
    expires_at: int = Field(description="ms since the epoch.")
    max_uses: int = Field(description="0: unlimited.")
    uses: int
    approval_required: bool
    revoked: bool


class InviteList(BaseModel):
    invites: list[InviteOut]


class JoinRequestBody(BaseModel):
    token: str = Field(min_length=1, max_length=128, description="An invite link's token.")


class JoinOut(BaseModel):
    conversation_id: str = Field(description="The group.")
    name: str = Field(description="Its name.")
    status: Literal["joined", "already_member", "pending"] = Field(
        description="`pending`: the link needs approval; a join request was filed."
    )


class JoinRequestOut(BaseModel):
    user_id: int
    link_id: str
    requested_at: int


class JoinRequestList(BaseModel):
    requests: list[JoinRequestOut] = Field(description="Oldest first.")


class DecisionOut(BaseModel):
    joined: bool = Field(description="The user is now a member (false when rejected).")


def invite_out(link: group_pb2.InviteLink) -> InviteOut:
    return InviteOut(
        link_id=link.link_id,
        conversation_id=link.conversation_id,
        token=link.token or None,
        created_by=link.created_by,
        created_at=link.created_at,
        expires_at=link.expires_at,
        max_uses=link.max_uses,
        uses=link.uses,
        approval_required=link.approval_required,
        revoked=link.revoked,
    )


def join_request_out(r: group_pb2.JoinRequest) -> JoinRequestOut:
    return JoinRequestOut(user_id=r.user_id, link_id=r.link_id, requested_at=r.requested_at)
