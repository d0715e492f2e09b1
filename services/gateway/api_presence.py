"""Presence routes of the gateway: who of a conversation is online and when they were
last seen, and the caller's own setting to hide presence. See docs/rest-api.md."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field, StrictBool

from im.v1 import user_pb2
from services.gateway.deps import Auth, ConversationId, GatewayDep
from services.gateway.problems import problem_responses

router = APIRouter()


class MemberPresenceOut(BaseModel):
    user_id: int = Field(description="A member of the conversation (never the caller).")
    online: bool = Field(description="Has a device connected now (false when hidden).")
    last_seen_ms: int | None = Field(
        description="Online: now. Offline: when last online (ms since the epoch). "
        "null: unknown, or the user hides presence."
    )


class ConversationPresence(BaseModel):
    conversation_id: str
    members: list[MemberPresenceOut]


class PresenceSetting(BaseModel):
    visible: StrictBool = Field(
        description="false: your online state and last seen are shown to nobody and never pushed."
    )


class MyPresence(BaseModel):
    visible: bool = Field(description="Whether others see your presence.")
    last_seen_ms: int | None = Field(
        description="When you were last offline-announced (ms), null if never."
    )


def _mine(info: user_pb2.PresenceInfo) -> MyPresence:
    return MyPresence(visible=info.visible, last_seen_ms=info.last_seen_ms or None)


@router.get(
    "/v1/conversations/{conversation_id}/presence",
    response_model=ConversationPresence,
    tags=["conversations"],
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)
async def conversation_presence(
    gateway: GatewayDep, claims: Auth, conversation_id: ConversationId
) -> ConversationPresence:
    """Online state and last seen of every other member (members only). Groups larger
    than `IM_PRESENCE_MAX_MEMBERS` are 422 `presence_group_too_large`; each user may ask
    `IM_PRESENCE_READS_PER_MINUTE` times a minute (429 past it)."""
    members = await gateway.presence_ops.of_conversation(claims.user_id, conversation_id)
    return ConversationPresence(
        conversation_id=conversation_id,
        members=[
            MemberPresenceOut(user_id=m.user_id, online=m.online, last_seen_ms=m.last_seen_ms)
            for m in members
        ],
    )


@router.get(
    "/v1/users/me/presence",
    response_model=MyPresence,
    tags=["users"],
    responses=problem_responses(401, 503),
)
async def my_presence(gateway: GatewayDep, claims: Auth) -> MyPresence:
    """Your presence setting and last seen."""
    return _mine(await gateway.presence_ops.mine(claims.user_id))


@router.put(
    "/v1/users/me/presence",
    response_model=MyPresence,
    tags=["users"],
    responses=problem_responses(401, 422, 503),
)
async def set_my_presence(gateway: GatewayDep, claims: Auth, body: PresenceSetting) -> MyPresence:
    """Show or hide your presence (online state and last seen) to everyone. Pushes
    follow within seconds (connectors cache the setting briefly)."""
    return _mine(await gateway.presence_ops.set_visible(claims.user_id, body.visible))
