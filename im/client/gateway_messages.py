"""Message REST calls, mixed into ``GatewayClient``: history, posting, search,
delivery and read cursors, recall and edit, read receipts."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

from im.client.gateway_http import (
    MAX_MEMBER_PAGE,
    MAX_PAGE,
    MAX_SEARCH_PAGE,
    GatewayCalls,
    _conv_path,
)
from im.client.gateway_types import (
    HistoryPage,
    PostedMessage,
    SearchHit,
    SearchPage,
    message_from_json,
)
from im.v1 import wire_pb2


class MessageCalls(GatewayCalls):
    """Messages come back as ``wire_pb2.Message``, like live deliveries."""

    async def history(
        self, conversation_id: str, after_seq: int = 0, limit: int = 100
    ) -> HistoryPage:
        data = await self._request(
            "GET",
            f"/v1/conversations/{_conv_path(conversation_id)}/messages",
            params={"after_seq": int(after_seq), "limit": max(1, min(int(limit), MAX_PAGE))},
        )
        messages = [message_from_json(m) for m in data.get("messages") or []]
        return HistoryPage(messages=messages, has_more=bool(data.get("has_more")))

    async def history_all(
        self,
        conversation_id: str,
        after_seq: int = 0,
        *,
        page_size: int = MAX_PAGE,
        until_seq: int | None = None,
    ) -> AsyncIterator[wire_pb2.Message]:
        """Every message after ``after_seq`` (up to ``until_seq`` if given), page by page."""
        cursor = after_seq
        while True:
            page = await self.history(conversation_id, cursor, page_size)
            for message in page.messages:
                if until_seq is not None and message.seq > until_seq:
                    return
                cursor = max(cursor, message.seq)
                yield message
            if not page.has_more or not page.messages:
                return
            if until_seq is not None and cursor >= until_seq:
                return

    async def post_message(
        self,
        conversation_id: str,
        text: str | None = None,
        *,
        body: bytes | None = None,
        content_type: str = "text/plain",
        client_msg_id: str | None = None,
        attachment_ids: list[str] | None = None,
    ) -> PostedMessage:
        """Send a message over REST, without a socket: ``text``, or ``body`` bytes.

        Idempotent by ``client_msg_id`` (a new UUID when None): after an ApiError 503 or
        a timeout, call again with the same one and the message is stored once. A 429
        carries ``retry_after``."""
        if (text is None) == (body is None):
            raise ValueError("give exactly one of text and body")
        payload: dict[str, Any] = {
            "client_msg_id": client_msg_id or str(uuid.uuid4()),
            "content_type": content_type,
        }
        if text is not None:
            payload["text"] = text
        else:
            payload["body_base64"] = base64.b64encode(body or b"").decode("ascii")
        if attachment_ids:
            payload["attachment_ids"] = list(attachment_ids)
        data = await self._request(
            "POST", f"/v1/conversations/{_conv_path(conversation_id)}/messages", json_body=payload
        )
        return PostedMessage.from_json(data)

    async def search(
        self,
        query: str,
        conversation_id: str | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> SearchPage:
        """Text messages of my conversations holding every word of ``query`` (whole
        words, any case), newest first; only ``conversation_id`` when given. Pass
        ``next_cursor`` back as ``cursor`` for the older ones."""
        params: dict[str, Any] = {"q": query, "limit": max(1, min(int(limit), MAX_SEARCH_PAGE))}
        if conversation_id is not None:
            params["conversation_id"] = conversation_id
        if cursor:
            params["cursor"] = cursor
        data = await self._request("GET", "/v1/search", params=params)
        hits = [
            SearchHit(
                message=message_from_json(r["message"]),
                snippet=r["snippet"]["text"],
                highlights=[(int(a), int(b)) for a, b in r["snippet"]["highlights"]],
            )
            for r in data.get("results") or []
        ]
        return SearchPage(hits=hits, next_cursor=data.get("next_cursor"))

    async def ack(self, conversation_id: str, seq: int) -> None:
        await self._request(
            "POST", f"/v1/conversations/{_conv_path(conversation_id)}/ack", json_body={"seq": seq}
        )

    async def read(self, conversation_id: str, seq: int) -> None:
        await self._request(
            "POST", f"/v1/conversations/{_conv_path(conversation_id)}/read", json_body={"seq": seq}
        )

    async def recall(self, conversation_id: str, msg_id: int) -> dict[str, Any]:
        """Recall a message (the sender within the recall window, a group's owner or
        admin at any time). Returns the recall event ``{msg_id, conversation_id,
        refers_to, content_type, server_ts}``; retrying is safe."""
        path = f"/v1/conversations/{_conv_path(conversation_id)}/messages/{int(msg_id)}/recall"
        return await self._request("POST", path)

    async def edit(
        self, conversation_id: str, msg_id: int, text: str, client_msg_id: str | None = None
    ) -> dict[str, Any]:
        """Replace the text of one's own text message (within the edit window).
        Returns the edit event; with ``client_msg_id``, retrying is safe."""
        body: dict[str, Any] = {"text": text}
        if client_msg_id:
            body["client_msg_id"] = client_msg_id
        path = f"/v1/conversations/{_conv_path(conversation_id)}/messages/{int(msg_id)}"
        return await self._request("PATCH", path, json_body=body)

    # ------------------------------------------------------------------ receipts

    async def receipts(
        self,
        conversation_id: str,
        seq: int,
        cursor: str | None = None,
        limit: int = 100,
        list: str = "both",  # named like the REST parameter; shadows the builtin here only
    ) -> dict[str, Any]:
        """Read receipts of message ``seq``: ``{conversation_id, seq, sender_id,
        read_count, unread_count, read_by, unread}``; ``read_by``/``unread`` are
        ``{user_ids, next_cursor}`` pages (None when not asked for by ``list``:
        "read", "unread" or "both")."""
        params: dict[str, Any] = {
            "seq": int(seq),
            "limit": max(1, min(int(limit), MAX_MEMBER_PAGE)),
            "list": list,
        }
        if cursor:
            params["cursor"] = cursor
        return await self._request(
            "GET", f"/v1/conversations/{_conv_path(conversation_id)}/receipts", params=params
        )
