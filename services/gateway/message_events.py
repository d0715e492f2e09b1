"""Recall and edit: the checks of the gateway, then a new event in the conversation's
seq stream, sent through the server-side send path (``im.sending``). The router
numbers, stores and fans the event out like any message, and applies it to its target
in the message store (``services/router/events.py``).

Who may do what (docs/rest-api.md, "Recall and edit"):

- recall: the sender within ``recall_window_seconds`` of the send; a group's owners
  and admins at any time, anyone's message;
- edit: the sender only, within ``edit_window_seconds``, text messages only, never a
  recalled one; the new text obeys the size limit of a send, and is refused where a
  send would be (a blocked 1:1 pair);
- neither in a dissolved group (read-only). Retracting one's own message in a blocked
  1:1 is allowed: it adds nothing the other side has not seen.

Retries are idempotent: the event's client_msg_id is derived from the target (recall)
or from the caller's key (edit), with the server's prefix that no client may use. A
request seen before is answered with the event it produced, even when its window has
closed since or the router has applied it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from im import events
from im.clock import Clock
from im.config import Settings
from im.ids import MsgIdGenerator
from im.ports import IdempotencyStore, MessageStore
from im.sending import ACK_RECORD, Sent, ServerSender, idempotency_key, server_client_msg_id
from im.v1 import group_pb2, wire_pb2
from services.gateway.calls import Calls
from services.gateway.conversations import ConversationOps, require_writable
from services.gateway.errors import ApiError, forbidden, group_dissolved

MODERATORS = (group_pb2.MEMBER_ROLE_ADMIN, group_pb2.MEMBER_ROLE_OWNER)
# The idempotency claim and the bus may each take up to publish_timeout; past this
# the caller gets 503 and retries under the same key.
SEND_GRACE = 2.0


@dataclass(frozen=True, slots=True)
class EventRequest:
    """One recall or edit, checked: what to send and under which key."""

    kind: str
    conversation_id: str
    target: wire_pb2.Message
    body: bytes
    client_msg_id: str


def recall_key(target: int) -> str:
    return server_client_msg_id("recall", target)


def edit_key(target: int, key: str) -> str:
    # Fixed length whatever the caller's key (the stored client_msg_id holds 64).
    digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    return server_client_msg_id("edit", target, digest)


class MessageEventOps:
    """``gateway.message_events``; ``me`` is always the calling user."""

    def __init__(
        self,
        settings: Settings,
        conversations: ConversationOps,
        messages: MessageStore,
        sender: ServerSender,
        ids: MsgIdGenerator,
        idempotency: IdempotencyStore,
        calls: Calls,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._conversations = conversations
        self._messages = messages
        self._sender = sender
        self._ids = ids
        self._idempotency = idempotency
        self._calls = calls
        self.clock = clock  # the windows' clock (tests put a FakeClock here)

    async def recall(self, me: int, device: str, conversation_id: str, msg_id: int) -> Sent:
        answer = await self._conversations.require_membership(conversation_id, me)
        if answer.read_only:
            raise group_dissolved()
        member = answer.member
        target = await self._target(member, conversation_id, msg_id)
        if events.is_reserved(target.content_type):
            raise ApiError(422, "invalid_request", "an event cannot be recalled")
        request = EventRequest(events.RECALL, conversation_id, target, b"", recall_key(msg_id))

        # A group's owners and admins: any message, any time.
        moderator = member.role in MODERATORS and conversation_id.startswith("g:")
        if not moderator and target.sender_id != me:
            raise forbidden("only the sender or a group's owner or admin may recall it")

        def allowed() -> None:
            if target.recalled:
                raise ApiError(409, "already_recalled", "the message is recalled already")
            if not moderator:
                self._within(target, self._settings.recall_window_seconds, "recall")

        return await self._send(me, device, request, allowed)

    async def edit(
        self, me: int, device: str, conversation_id: str, msg_id: int, text: str, key: str
    ) -> Sent:
        body = text.encode("utf-8")
        if not body:
            raise ApiError(422, "invalid_request", "text must not be empty (recall instead)")
        if len(body) > self._settings.max_body_bytes:
            raise ApiError(
                422,
                "invalid_request",
                f"text exceeds {self._settings.max_body_bytes} bytes (UTF-8)",
            )
        answer = await self._conversations.require_membership(conversation_id, me)
        require_writable(answer)
        target = await self._target(answer.member, conversation_id, msg_id)
        if target.sender_id != me:
            raise forbidden("only the sender may edit a message")
        if not target.content_type.startswith("text/"):
            raise ApiError(422, "invalid_request", "only text messages can be edited")
        request = EventRequest(events.EDIT, conversation_id, target, body, edit_key(msg_id, key))

        def allowed() -> None:
            if target.recalled:
                raise ApiError(409, "already_recalled", "a recalled message cannot be edited")
            self._within(target, self._settings.edit_window_seconds, "edit")

        return await self._send(me, device, request, allowed)

    # ------------------------------------------------------------------ parts

    async def _target(
        self, member: group_pb2.Member, conversation_id: str, msg_id: int
    ) -> wire_pb2.Message:
        """The message, as this member may see it."""
        found = await self._calls.backend("message store", self._messages.get_by_msg_ids([msg_id]))
        target = found.get(msg_id)
        # Another conversation's message, or one from before the caller joined,
        # answers like a missing one: ids must not be probeable.
        if (
            target is None
            or target.conversation_id != conversation_id
            or target.seq <= member.joined_seq
        ):
            raise ApiError(404, "not_found", f"no message {msg_id} in this conversation")
        return target

    def _within(self, target: wire_pb2.Message, window: float, what: str) -> None:
        if self.clock.wall_ms() - target.server_ts > window * 1000:
            raise ApiError(
                409, "window_passed", f"a message can be {what}ed within {window:g} s of sending"
            )

    async def _send(
        self, me: int, device: str, request: EventRequest, allowed: Callable[[], None]
    ) -> Sent:
        """Claims the event's key first: a request seen before (a retry) skips the
        checks of the message's state and gets the event it produced; a new one is
        checked, and its claim released if refused."""
        key = idempotency_key(me, request.client_msg_id)
        fresh = ACK_RECORD.pack(self._ids.next_id(), self.clock.wall_ms())
        previous = await self._calls.backend(
            "idempotency store",
            asyncio.wait_for(
                self._idempotency.claim(key, fresh, self._settings.idempotency_ttl_seconds),
                self._settings.publish_timeout,
            ),
        )
        if previous is None:
            try:
                allowed()
            except ApiError:
                await self._calls.degraded(
                    "idempotency store",
                    self._idempotency.release(key),
                    None,
                    "a refused recall or edit keeps its key until it expires",
                )
                raise
        event = wire_pb2.Message(
            conversation_id=request.conversation_id,
            sender_id=me,
            sender_device=device,
            client_msg_id=request.client_msg_id,
            content_type=request.kind,
            body=request.body,
            refers_to=request.target.msg_id,
        )
        # The sender finds the claim made above and publishes under its msg_id.
        return await self._calls.backend(
            "message bus",
            asyncio.wait_for(
                self._sender.send(event), 2 * self._settings.publish_timeout + SEND_GRACE
            ),
        )
