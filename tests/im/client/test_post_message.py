"""GatewayClient.post_message: what it sends (MockTransport) and what it returns."""

from __future__ import annotations

import base64
import json
import uuid

import httpx
import pytest

from im.client import ApiError, GatewayClient, PostedMessage

ANSWER = {
    "msg_id": "9223372036854775001",  # past 2**53: a string on REST
    "conversation_id": "g:7",
    "client_msg_id": "k1",
    "server_ts": 1_800_000_000_000,
}


def client(seen: list[httpx.Request], status: int = 202, headers: dict | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=ANSWER, headers=headers)

    return GatewayClient("http://gw.test", token="t", transport=httpx.MockTransport(handler))


async def test_text_and_bytes() -> None:
    seen: list[httpx.Request] = []
    async with client(seen) as gw:
        posted = await gw.post_message("g:7", "hi", client_msg_id="k1")
        await gw.post_message(
            "d:1:2",
            body=b"\x00\xff",
            content_type="application/octet-stream",
            attachment_ids=["a1"],
        )
    assert posted == PostedMessage(9223372036854775001, "g:7", "k1", 1_800_000_000_000)
    first, second = (json.loads(r.content) for r in seen)
    assert seen[0].url.raw_path == b"/v1/conversations/g:7/messages"
    assert first == {"client_msg_id": "k1", "content_type": "text/plain", "text": "hi"}
    assert base64.b64decode(second["body_base64"]) == b"\x00\xff"
    assert second["attachment_ids"] == ["a1"] and "text" not in second
    uuid.UUID(second["client_msg_id"])  # a new UUID when none is given


async def test_exactly_one_body() -> None:
    async with client([]) as gw:
        with pytest.raises(ValueError):
            await gw.post_message("g:7")
        with pytest.raises(ValueError):
            await gw.post_message("g:7", "x", body=b"x")


async def test_a_refusal_keeps_retry_after() -> None:
    async with client([], status=429, headers={"retry-after": "2"}) as gw:
        with pytest.raises(ApiError) as info:
            await gw.post_message("g:7", "x", client_msg_id="k1")
    assert (info.value.status, info.value.retry_after) == (429, 2.0)
