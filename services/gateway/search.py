"""Message search as one user may see it: the words of the query, the conversations
the user is in (each from its join point on), the store's hits, and a snippet each.
Membership is the group service's; the index is the message store's (see
docs/rest-api.md for what each backend does).

A search may be the most expensive read there is (words a full-text index skips
become a scan of every conversation of the user), so each user has a rate, and each
gateway runs only a few at once: the rest are turned away (503), never queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from im.config import Settings
from im.ports import MessageStore, RateLimiter
from im.search import InvalidQuery, Snippet, parse_query, snippet
from im.v1 import group_pb2, group_pb2_grpc, wire_pb2
from services.gateway.calls import Calls
from services.gateway.conversations import ConversationOps
from services.gateway.errors import ApiError, rate_limited
from services.gateway.limits import RateLimited

T = TypeVar("T")
RATE_WINDOW = 60.0
# Seconds a client turned away by a full gateway should wait: a slot frees when a
# running search ends, within search_timeout.
BUSY_RETRY_AFTER = 1


@dataclass(frozen=True, slots=True)
class SearchHit:
    message: wire_pb2.Message
    snippet: Snippet


class SearchSlots:
    """At most ``size`` store searches at once. A search keeps its slot until the
    store's call really ends: a timeout ends the waiting, not the query (a SQL query
    goes on in its worker thread), and a slot freed at the timeout would let repeated
    searches pile up in the threads and connections that every other call needs."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.running: set[asyncio.Task[Any]] = set()

    def start(self, call: Callable[[], Coroutine[Any, Any, T]]) -> asyncio.Task[T]:
        """``call()`` running in a slot; 503 with Retry-After when none is free."""
        if len(self.running) >= self.size:
            raise ApiError(
                503,
                "unavailable",
                "too many searches are running; retry later",
                {"Retry-After": str(BUSY_RETRY_AFTER)},
            )
        task = asyncio.create_task(call())
        self.running.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self.running.discard(task)
        if not task.cancelled():
            task.exception()  # a search given up on may fail later: nobody to tell


class SearchOps:
    """``gateway.search_ops``; ``me`` is always the calling user."""

    def __init__(
        self,
        settings: Settings,
        groups: Callable[[], group_pb2_grpc.GroupServiceStub],
        messages: MessageStore,
        calls: Calls,
        conversations: ConversationOps,
        rate_limits: Callable[[], RateLimiter],
    ) -> None:
        self._settings = settings
        self._groups = groups
        self._messages = messages
        self._calls = calls
        self._conversations = conversations
        self._rate_limits = rate_limits  # looked up per call: tests swap the backends
        self.slots = SearchSlots(settings.search_concurrency)

    async def search(
        self, me: int, query: str, conversation_id: str | None, before_msg_id: int, limit: int
    ) -> tuple[list[SearchHit], str | None]:
        """A page of hits, newest first, and the cursor of the next page (None: last)."""
        try:
            terms = parse_query(query)
        except InvalidQuery as exc:
            raise ApiError(422, "invalid_request", str(exc)) from exc
        await self._check_rate(me)
        scope = await self._scope(me, conversation_id)
        if not scope:
            return [], None
        # One extra hit tells whether another page exists without a count query.
        running = self.slots.start(
            lambda: self._messages.search(scope, terms, before_msg_id, limit + 1)
        )
        # Shielded: at the timeout the answer is a 503, and the slot stays taken
        # until the store's call returns (the database stops it: see SqlMessageStore).
        found = await self._calls.backend(
            "message store",
            asyncio.wait_for(asyncio.shield(running), self._settings.search_timeout),
        )
        # The store skips recalled messages; checked again in case one slipped through
        # (an index entry not yet updated): a recalled message is never shown.
        page = [m for m in found[:limit] if not m.recalled]
        more = len(found) > limit
        hits = [SearchHit(m, snippet(_text(m), terms)) for m in page]
        return hits, (str(found[limit - 1].msg_id) if more else None)

    async def _check_rate(self, me: int) -> None:
        limit = self._settings.searches_per_minute
        if limit <= 0:
            return
        wait = await self._calls.degraded(
            "rate limits",
            self._rate_limits().hit(f"search:{me}", limit, RATE_WINDOW),
            0.0,
            "searches are not rate limited",
        )
        if wait > 0:
            raise rate_limited(RateLimited(wait, f"at most {limit} searches per minute"))

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
