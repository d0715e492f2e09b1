"""Sending a message over REST, for clients without a socket (scripts, bots with a
user account, server-rendered pages): ``POST /v1/conversations/{id}/messages``. The
logic is ``gateway.messages`` (messages.py), shared with the gRPC MessageService."""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator

from im.sending import MAX_CLIENT_MSG_ID, SERVER_KEY_PREFIX
from services.gateway.deps import Auth, ConversationId, GatewayDep
from services.gateway.messages import DEFAULT_CONTENT_TYPE, MAX_CONTENT_TYPE, Draft, invalid
from services.gateway.problems import problem_responses

router = APIRouter()


class PostMessageRequest(BaseModel):
    client_msg_id: str = Field(
        min_length=1,
        max_length=MAX_CLIENT_MSG_ID,
        description="Your idempotency key (e.g. a UUID): send again with the same one "
        "after a timeout or a 503, and the message is stored once, under one msg_id. "
        "Shared with the socket's Send: one key is one message whichever way it went. "
        f"Keys starting with `{SERVER_KEY_PREFIX}` are the server's own (422).",
        examples=["7f1c2a9e-4b6d-4c1e-9a55-0d2f3b8e61aa"],
    )
    content_type: str = Field(
        DEFAULT_CONTENT_TYPE,
        min_length=1,
        max_length=MAX_CONTENT_TYPE,
        description="MIME type of the body. `application/vnd.im.*` is reserved for the "
        "server's events (422).",
    )
    text: str | None = Field(
        None, description="The body as text (sent as UTF-8). Give this or `body_base64`."
    )
    body_base64: str | None = Field(
        None, description="The body, standard base64 (binary bodies). Or give `text`."
    )
    attachment_ids: list[str] = Field(
        default_factory=list,
        description="Ids of uploaded attachments, as on the socket: at most "
        "IM_MAX_ATTACHMENTS_PER_MESSAGE (10 unless set; 0: none), no id twice (422).",
    )

    @model_validator(mode="after")
    def _one_body(self) -> PostMessageRequest:
        if (self.text is None) == (self.body_base64 is None):
            raise ValueError("give exactly one of text and body_base64")
        return self

    def body(self) -> bytes:
        if self.text is not None:
            try:
                return self.text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate ("\ud800") from the JSON
                raise invalid("text is not valid Unicode (lone surrogate)") from None
        try:
            return base64.b64decode(self.body_base64 or "", validate=True)
        except (binascii.Error, ValueError):
            raise invalid("body_base64 is not valid standard base64") from None


class SentMessage(BaseModel):
    msg_id: str = Field(
        description="Unique, time-ordered 64-bit id as a decimal string (JavaScript "
        "numbers cannot hold every 64-bit id)."
    )
    conversation_id: str = Field(description="Conversation id.")
    client_msg_id: str = Field(description="Your idempotency key.")
    server_ts: int = Field(description="Server time of acceptance, ms since the epoch.")


@router.post(
    "/v1/conversations/{conversation_id}/messages",
    status_code=202,
    response_model=SentMessage,
    tags=["conversations"],
    responses=problem_responses(401, 403, 404, 413, 422, 429, 503),
)
async def post_message(
    gateway: GatewayDep, claims: Auth, conversation_id: ConversationId, body: PostMessageRequest
) -> SentMessage:
    """Send a message without a socket; members only. Accepted (202) once the message
    bus has it: the router then numbers it (its `seq`), stores it and pushes it to the
    members' sockets, the sender's included, like any message. Idempotent by
    `client_msg_id`; rate-limited per user like socket Sends (429 with Retry-After);
    503 when the bus does not answer (send again with the same `client_msg_id`)."""
    draft = Draft(
        sender_id=claims.user_id,
        sender_device=claims.device_id,
        conversation_id=conversation_id,
        client_msg_id=body.client_msg_id,
        body=body.body(),
        content_type=body.content_type,
        attachment_ids=tuple(body.attachment_ids),
    )
    sent = await gateway.messages.send_as_user(draft)
    return SentMessage(
        msg_id=str(sent.msg_id),
        conversation_id=sent.conversation_id,
        client_msg_id=body.client_msg_id,
        server_ts=sent.server_ts,
    )
