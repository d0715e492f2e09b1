"""Server-side sends through the gateway: ``POST /v1/conversations/{id}/messages`` (a
user without a socket) and the internal gRPC ``MessageService.Send`` (services, bots).

One path for both: the input is held to a socket Send's limits, the sender must be
allowed to write there (a member; a 1:1 is created on its first message, as on the
socket), then ``ServerSender`` (im/sending.py) publishes it. Its idempotency record is
the socket path's, so a client_msg_id sent over any of them is one message, stored once
under one msg_id. Refusals are ``ApiError``s; the gRPC servicer maps them to statuses.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from im import attachments, events
from im.config import Settings
from im.ids import is_valid_conversation_id, parse_direct
from im.ports import RateLimiter
from im.sending import Sent, ServerSender, client_msg_id_problem
from im.v1 import user_pb2, wire_pb2
from im.validation import is_id
from services.gateway.calls import Calls
from services.gateway.conversations import ConversationOps, require_writable
from services.gateway.errors import ApiError, cannot_write, forbidden, rate_limited
from services.gateway.limits import RateLimited

log = logging.getLogger("im.gateway")

# The limits of a socket Send (services/connector/sendpath.py).
MAX_CONTENT_TYPE = 64
DEFAULT_CONTENT_TYPE = "text/plain"
SERVER_DEVICE = "server"  # sender_device of gRPC sends that name none
RETRY_AFTER_SECONDS = 1  # told to a caller whose send met a bus failure
# The problem code of a gRPC send naming a user that does not exist.
UNKNOWN_SENDER = "unknown_sender"


@dataclass(frozen=True, slots=True)
class Draft:
    """A message to send, as the caller gave it."""

    sender_id: int
    sender_device: str
    conversation_id: str
    client_msg_id: str
    body: bytes
    content_type: str = DEFAULT_CONTENT_TYPE
    attachment_ids: tuple[str, ...] = field(default_factory=tuple)

    def message(self) -> wire_pb2.Message:
        return wire_pb2.Message(
            conversation_id=self.conversation_id,
            sender_id=self.sender_id,
            sender_device=self.sender_device,
            client_msg_id=self.client_msg_id,
            content_type=self.content_type,
            body=self.body,
            attachment_ids=list(self.attachment_ids),
        )


def invalid(detail: str) -> ApiError:
    return ApiError(422, "invalid_request", detail)


class MessageOps:
    """``gateway.messages``: server-side sends, for users (REST) and services (gRPC)."""

    def __init__(
        self,
        settings: Settings,
        sender: ServerSender,
        conversations: ConversationOps,
        get_user: Callable[[int], Awaitable[user_pb2.User]],
        limiter: Callable[[], RateLimiter],
        calls: Calls,
    ) -> None:
        self._settings = settings
        self._sender = sender
        self._conversations = conversations
        self._get_user = get_user
        self._limiter = limiter  # looked up per call: tests swap the backends
        self._calls = calls

    async def send_as_user(self, draft: Draft) -> Sent:
        """A logged-in user's send (REST): rate-limited per user like socket Sends."""
        self.check(draft)
        await self._limit(draft.sender_id)
        return await self._send(draft)

    async def send_as_service(self, draft: Draft) -> Sent:
        """An internal caller's send in a user's name (gRPC): the user must exist."""
        if not is_id(draft.sender_id):
            raise invalid("sender_id must be a user id")
        self.check(draft)
        try:
            await self._get_user(draft.sender_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
            raise ApiError(422, UNKNOWN_SENDER, f"no user {draft.sender_id}") from None
        return await self._send(draft)

    def check(self, draft: Draft) -> None:
        """The limits of a socket Send: 422, or 413 for a body over max_body_bytes."""
        problem = client_msg_id_problem(draft.client_msg_id)
        if problem is not None:
            raise invalid(problem)
        content_type = draft.content_type
        if not 1 <= len(content_type) <= MAX_CONTENT_TYPE:
            raise invalid(f"content_type must be 1..{MAX_CONTENT_TYPE} characters")
        if not (content_type.isascii() and content_type.isprintable()):
            raise invalid("content_type must be printable ASCII")
        if events.is_reserved(content_type):
            raise invalid(f"content_type {events.RESERVED_PREFIX}* is reserved for server events")
        limit = self._settings.max_body_bytes
        if len(draft.body) > limit:
            raise ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes")
        if draft.attachment_ids:
            problem = attachments.check_ids(
                draft.attachment_ids, self._settings.max_attachments_per_message
            )
            if problem is not None:
                raise invalid(problem)

    async def _limit(self, user_id: int) -> None:
        """The socket's allowance (send_burst, refilled at send_rate_per_second) as a
        fixed window per user on the RateLimiter port, shared by every gateway."""
        burst, rate = self._settings.send_burst, self._settings.send_rate_per_second
        if burst <= 0 or rate <= 0:
            return
        wait = await self._calls.degraded(
            "rate limiter",
            self._limiter().hit(f"send:{user_id}", burst, burst / rate),
            0.0,
            "REST sends are not rate-limited",
        )
        if wait > 0:
            raise rate_limited(RateLimited(wait, "send rate exceeded; retry later"))

    async def _send(self, draft: Draft) -> Sent:
        await self._require_writer(draft.sender_id, draft.conversation_id)
        # Any failure of the idempotency store or the bus is a 503: the caller sends
        # again with the same client_msg_id, and the message is still stored once.
        try:
            return await self._sender.send(draft.message())
        except Exception as exc:
            log.warning("server-side send failed: %r", exc)
            raise ApiError(
                503,
                "unavailable",
                "the message bus did not take the message; send it again with the same "
                "client_msg_id",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from exc

    async def _require_writer(self, user_id: int, conversation_id: str) -> None:
        """A member may write, unless the 1:1 pair has a block or the group is
        dissolved; a user's own 1:1 with an existing peer is created on its first
        message (as a socket Send does). Anything else: 403, unknown ids included
        (other people's conversations must not be probeable)."""
        if not is_valid_conversation_id(conversation_id):
            raise ApiError(404, "not_found", "no such conversation")
        answer = await self._conversations.membership(conversation_id, user_id)
        if not answer.is_member:
            await self._open_own_direct(user_id, conversation_id)
            answer = await self._conversations.membership(conversation_id, user_id)
        if not answer.is_member:
            raise cannot_write()
        require_writable(answer)

    async def _open_own_direct(self, user_id: int, conversation_id: str) -> None:
        pair = parse_direct(conversation_id)
        if pair is None or user_id not in pair:
            raise forbidden()
        peer = pair[1] if pair[0] == user_id else pair[0]
        try:
            await self._conversations.open_direct(user_id, peer)
        except ApiError as exc:
            if exc.status == 404:  # no such peer
                raise forbidden() from None
            raise
