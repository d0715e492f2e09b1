"""Conversation routes of the gateway: the list (and sync), direct conversations,
history, delivered/read cursors and read receipts. See docs/rest-api.md."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from im.auth import Claims
from im.validation import MAX_INT64
from services.gateway.deps import Auth, ConversationId, GatewayDep
from services.gateway.inputs import AfterSeqQuery, PageCursor
from services.gateway.models import (
    ConversationList,
    ConversationOut,
    CursorRequest,
    DirectRequest,
    MessagePage,
    ReceiptsOut,
    conversation_out,
    message_out,
    receipts_out,
)
from services.gateway.problems import problem_responses
from services.gateway.service import Gateway
from services.gateway.settings_models import SettingsOut, SettingsPatch, settings_out

router = APIRouter()


@router.post(
    "/v1/conversations/direct",
    response_model=ConversationOut,
    tags=["conversations"],
    responses=problem_responses(401, 404, 422, 503),
)
async def open_direct(gateway: GatewayDep, claims: Auth, body: DirectRequest) -> ConversationOut:
    """Get or create the 1:1 conversation with `peer_id`."""
    return conversation_out(
        await gateway.conversation_ops.open_direct(claims.user_id, body.peer_id)
    )


async def _conversation_list(gateway: Gateway, claims: Claims) -> ConversationList:
    views = await gateway.conversation_ops.conversations(claims.user_id)
    return ConversationList(conversations=[conversation_out(v) for v in views])


@router.get(
    "/v1/conversations",
    response_model=ConversationList,
    tags=["conversations"],
    responses=problem_responses(401, 503),
)
async def conversations(gateway: GatewayDep, claims: Auth) -> ConversationList:
    """The user's conversations with their cursors, unread counts and the user's own
    settings: pinned first, then by last activity (newest first)."""
    return await _conversation_list(gateway, claims)


@router.patch(
    "/v1/conversations/{conversation_id}/settings",
    response_model=SettingsOut,
    tags=["conversations"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def update_settings(
    gateway: GatewayDep, claims: Auth, conversation_id: ConversationId, body: SettingsPatch
) -> SettingsOut:
    """Change your own settings of a conversation (mute, pin, archive, your name for
    it); only the fields present change. Members only. Every online device of yours is
    told with a `ConversationSettingsChanged` frame; muted conversations get no push."""
    stored = await gateway.settings_ops.update(claims.user_id, conversation_id, body)
    return settings_out(stored, int(time.time() * 1000))


@router.get(
    "/v1/sync",
    response_model=ConversationList,
    tags=["conversations"],
    responses=problem_responses(401, 503),
)
async def sync(gateway: GatewayDep, claims: Auth) -> ConversationList:
    """Same as `GET /v1/conversations`: call it after (re)connecting, then pull each
    conversation's gap with `GET /v1/conversations/{id}/messages?after_seq=...`."""
    return await _conversation_list(gateway, claims)


@router.get(
    "/v1/conversations/{conversation_id}/messages",
    response_model=MessagePage,
    tags=["conversations"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def history(
    gateway: GatewayDep,
    claims: Auth,
    conversation_id: ConversationId,
    after_seq: AfterSeqQuery = 0,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
) -> MessagePage:
    """Messages with seq > after_seq, ascending; 403 for a non-member."""
    messages, has_more = await gateway.conversation_ops.history(
        claims.user_id, conversation_id, after_seq, limit
    )
    return MessagePage(messages=[message_out(m) for m in messages], has_more=has_more)


@router.post(
    "/v1/conversations/{conversation_id}/ack",
    status_code=204,
    response_class=Response,
    tags=["conversations"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def ack(
    gateway: GatewayDep, claims: Auth, conversation_id: ConversationId, body: CursorRequest
) -> Response:
    """Everything up to `seq` has been delivered (the cursor never moves back)."""
    await gateway.conversation_ops.update_cursor(
        claims.user_id, conversation_id, body.seq, read=False, device_id=claims.device_id
    )
    return Response(status_code=204)


@router.post(
    "/v1/conversations/{conversation_id}/read",
    status_code=204,
    response_class=Response,
    tags=["conversations"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def read(
    gateway: GatewayDep, claims: Auth, conversation_id: ConversationId, body: CursorRequest
) -> Response:
    """Everything up to `seq` has been read (moves the delivered cursor too)."""
    await gateway.conversation_ops.update_cursor(
        claims.user_id, conversation_id, body.seq, read=True, device_id=claims.device_id
    )
    return Response(status_code=204)


@router.get(
    "/v1/conversations/{conversation_id}/receipts",
    response_model=ReceiptsOut,
    tags=["conversations"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def receipts(
    gateway: GatewayDep,
    claims: Auth,
    conversation_id: ConversationId,
    seq: Annotated[int, Query(ge=1, le=MAX_INT64, description="The message's seq.")],
    cursor: PageCursor = "",
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size of each list.")] = 100,
    list_: Annotated[
        Literal["read", "unread", "both"],
        Query(alias="list", description="Which member list(s) to page through."),
    ] = "both",
) -> ReceiptsOut:
    """Read receipts of message `seq`: counts, and pages of who has and has not read
    it (the sender excluded), from the members' read cursors. Members only."""
    view = await gateway.conversation_ops.receipts(
        claims.user_id, conversation_id, seq, cursor, limit, list_
    )
    return receipts_out(view)
