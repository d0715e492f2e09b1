"""Message search as one user may see it: the words of the query, the conversations
the user is in (each from its join point on), the store's hits, and a snippet each.
Membership is the group service's; the index is the message store's (see
docs/rest-api.md for what each backend does)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from im.config import Settings
from im.ports import MessageStore
from im.search import InvalidQuery, Snippet, parse_query, snippet
from im.v1 import group_pb2, group_pb2_grpc, wire_pb2
from services.gateway.calls import Calls
from services.gateway.conversations import ConversationOps
from services.gateway.errors import ApiError


@dataclass(frozen=True, slots=True)
class SearchHit:
    message: wire_pb2.Message
    snippet: Snippet


class SearchOps:
    """``gateway.search_ops``; ``me`` is always the calling user."""

    def __init__(
        self,
        settings: Settings,
        groups: Callable[[], group_pb2_grpc.GroupServiceStub],
        messages: MessageStore,
        calls: Calls,
        conversations: ConversationOps,
    ) -> None:
        self._settings = settings
        self._groups = groups
        self._messages = messages
        self._calls = calls
        self._conversations = conversations

    async def search(
        self, me: int, query: str, conversation_id: str | None, before_msg_id: int, limit: int
    ) -> tuple[list[SearchHit], str | None]:
        """A page of hits, newest first, and the cursor of the next page (None: last)."""
        try:
            terms = parse_query(query)
        except InvalidQuery as exc:
            raise ApiError(422, "invalid_request", str(exc)) from exc
        scope = await self._scope(me, conversation_id)
        if not scope:
            return [], None
        # One extra hit tells whether another page exists without a count query.
        found = await self._calls.backend(
            "message store",
            asyncio.wait_for(
                self._messages.search(scope, terms, before_msg_id, limit + 1),
                self._settings.search_timeout,
            ),
        )
        # The store skips recalled messages; checked again in case one slipped through
        # (an index entry not yet updated): a recalled message is never shown.
        page = [m for m in found[:limit] if not m.recalled]
        more = len(found) > limit
        hits = [SearchHit(m, snippet(_text(m), terms)) for m in page]
        return hits, (str(found[limit - 1].msg_id) if more else None)

    async def _scope(self, me: int, conversation_id: str | None) -> dict[str, int]:
        """Conversation id -> the seq after which ``me`` may read (its joined_seq,
        0 when the group shows its history to new members)."""
        if conversation_id is not None:
            member = await self._conversations.require_member(conversation_id, me)
            return {conversation_id: member.joined_seq}
        request = group_pb2.ListUserConversationsRequest(user_id=me)
        entries = (
            await self._calls.rpc(self._groups().ListUserConversations, request)
        ).conversations
        return {e.conversation.conversation_id: e.member.joined_seq for e in entries}


def _text(m: wire_pb2.Message) -> str:
    return m.body.decode("utf-8", errors="replace")
