"""Message routes of the gateway: recall and edit (``message_events.py``). See
docs/rest-api.md, "Recall and edit"."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path

from im import events
from im.sending import Sent
from im.validation import MAX_INT64_DIGITS
from services.gateway.deps import Auth, ConversationId, GatewayDep
from services.gateway.errors import ApiError
from services.gateway.models import EditRequest, MessageEventOut
from services.gateway.problems import problem_responses

router = APIRouter()

MsgId = Annotated[
    str,
    Path(
        max_length=MAX_INT64_DIGITS,
        pattern=r"^[0-9]+$",
        description="The message's msg_id (decimal string).",
    ),
]


def _msg_id(text: str) -> int:
    value = int(text)
    if value <= 0 or value >= 1 << 63:
        raise ApiError(422, "invalid_request", "msg_id must be from 1 to 2^63-1")
    return value


def _event_out(sent: Sent, kind: str, target: int) -> MessageEventOut:
    return MessageEventOut(
        msg_id=str(sent.msg_id),
        conversation_id=sent.conversation_id,
        refers_to=str(target),
        content_type=kind,
        server_ts=sent.server_ts,
    )


@router.post(
    "/v1/conversations/{conversation_id}/messages/{msg_id}/recall",
    status_code=202,
    response_model=MessageEventOut,
    tags=["messages"],
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def recall(
    gateway: GatewayDep, claims: Auth, conversation_id: ConversationId, msg_id: MsgId
) -> MessageEventOut:
    """Recall a message: its sender within the recall window, a group's owners and
    admins at any time. A recall event joins the conversation (202: on its way);
    history then shows the message `recalled`, its body erased. Retrying is safe."""
    target = _msg_id(msg_id)
    sent = await gateway.message_events.recall(
        claims.user_id, claims.device_id, conversation_id, target
    )
    return _event_out(sent, events.RECALL, target)


@router.patch(
    "/v1/conversations/{conversation_id}/messages/{msg_id}",
    status_code=202,
    response_model=MessageEventOut,
    tags=["messages"],
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def edit(
    gateway: GatewayDep,
    claims: Auth,
    conversation_id: ConversationId,
    msg_id: MsgId,
    body: EditRequest,
    idempotency_key: Annotated[
        str | None, Header(max_length=64, description="Same as client_msg_id.")
    ] = None,
) -> MessageEventOut:
    """Edit the text of one's own text message within the edit window. An edit event
    joins the conversation (202: on its way); history then shows the new text with
    `edited_at`. With a key (client_msg_id or Idempotency-Key), retrying is safe."""
    target = _msg_id(msg_id)
    key = body.client_msg_id or idempotency_key
    if key is None:
        # Without a key every request is a new edit: a fresh one per request.
        key = f"auto:{gateway.ids.next_id()}"
    sent = await gateway.message_events.edit(
        claims.user_id, claims.device_id, conversation_id, target, body.text, key
    )
    return _event_out(sent, events.EDIT, target)
