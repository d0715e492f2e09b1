"""GatewayClient: problem+json error mapping (MockTransport) and calls against the
fake gateway (a real uvicorn server)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import httpx
import pytest

from im.client import ApiError, GatewayClient, message_from_json

if TYPE_CHECKING:  # conftest is not importable by name reliably
    from conftest import FakeIm


def mock_client(handler: httpx.MockTransport, token: str | None = "t") -> GatewayClient:
    return GatewayClient("http://gw.test", token=token, transport=handler)


async def test_problem_json_maps_to_api_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer t"
        return httpx.Response(
            403,
            json={
                "type": "https://im.example/problems/forbidden",
                "title": "Forbidden",
                "status": 403,
                "detail": "not a member of g:7",
                "code": "forbidden",
            },
            headers={"content-type": "application/problem+json"},
        )

    async with mock_client(httpx.MockTransport(handler)) as gw:
        with pytest.raises(ApiError) as info:
            await gw.history("g:7")
    err = info.value
    assert (err.status, err.code, err.detail, err.title) == (
        403,
        "forbidden",
        "not a member of g:7",
        "Forbidden",
    )
    assert err.to_dict()["code"] == "forbidden"


async def test_non_problem_bodies_still_map() -> None:
    answers = iter(
        [
            httpx.Response(502, text="<html>bad gateway</html>"),
            httpx.Response(422, json={"detail": [{"loc": ["body", "seq"], "msg": "required"}]}),
            httpx.Response(503, json={"title": "down"}),
        ]
    )
    async with mock_client(httpx.MockTransport(lambda request: next(answers))) as gw:
        with pytest.raises(ApiError) as info:
            await gw.me()
        assert (info.value.status, info.value.code) == (502, "http_502")
        assert "bad gateway" in info.value.detail
        with pytest.raises(ApiError) as info:
            await gw.ack("d:1:2", 3)
        assert (info.value.status, info.value.code) == (422, "invalid_request")
        assert '"seq"' in info.value.detail  # the validation list is kept, as JSON
        with pytest.raises(ApiError) as info:
            await gw.sync()
        assert (info.value.code, info.value.detail) == ("unavailable", "down")


async def test_unreachable_and_not_logged_in() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with mock_client(httpx.MockTransport(refuse)) as gw:
        with pytest.raises(ApiError) as info:
            await gw.me()
        assert (info.value.status, info.value.code) == (0, "unreachable")
    async with mock_client(httpx.MockTransport(refuse), token=None) as gw:
        with pytest.raises(ApiError) as info:
            await gw.me()
        assert (info.value.status, info.value.code) == (401, "unauthorized")


async def test_conversation_ids_are_path_safe() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"messages": [], "has_more": False})

    async with mock_client(httpx.MockTransport(handler)) as gw:
        await gw.history("d:1:2", after_seq=5, limit=9999)
    assert seen == ["/v1/conversations/d:1:2/messages?after_seq=5&limit=500"]


def test_message_from_json() -> None:
    m = message_from_json(
        {
            "msg_id": "18446744073709551000",
            "conversation_id": "g:1",
            "seq": 3,
            "sender_id": 9,
            "sender_device": "web",
            "client_msg_id": "c",
            "content_type": "application/octet-stream",
            "body_b64": base64.b64encode(b"\x00\xff").decode(),
            "text": None,
            "server_ts": 5,
        }
    )
    assert m.msg_id == 18446744073709551000 and m.body == b"\x00\xff" and m.seq == 3


async def test_against_fake_gateway(fake_im: FakeIm) -> None:
    async with GatewayClient(fake_im.gateway_url) as gw:
        created = await gw.register("alice", "secret", "Alice")
        assert created["username"] == "alice"
        with pytest.raises(ApiError) as info:
            await gw.register("alice", "x")
        assert (info.value.status, info.value.code) == (409, "username_taken")
        with pytest.raises(ApiError) as info:
            await gw.login("alice", "wrong", "d")
        assert info.value.code == "invalid_credentials"

        login = await gw.login("alice", "secret", "laptop")
        assert login.user_id == created["user_id"] and login.device_id == "laptop"
        assert login.connector.tcp == fake_im.tcp_address
        assert login.address("ws") == fake_im.ws_address
        assert not login.expires_within(60)
        assert gw.token == login.access_token

        bob = fake_im.add_user("bob")
        assert (await gw.me())["username"] == "alice"
        assert (await gw.user_by_name("bob"))["user_id"] == bob  # type: ignore[index]
        assert await gw.user_by_name("nobody") is None
        with pytest.raises(ApiError) as info:
            await gw.user(999)
        assert info.value.status == 404

        cid = "d:1:2"
        for i in range(5):
            fake_im.store(cid, bob, f"m{i + 1}")
        page = await gw.history(cid, after_seq=1, limit=2)
        assert [m.seq for m in page.messages] == [2, 3] and page.has_more
        assert [m.seq async for m in gw.history_all(cid, page_size=2)] == [1, 2, 3, 4, 5]
        assert fake_im.page_limit_seen[-3:] == [2, 2, 2]
        assert [m.seq async for m in gw.history_all(cid, 1, page_size=2, until_seq=3)] == [2, 3]
        assert [m.body async for m in gw.history_all(cid, 4)] == [b"m5"]

        (conv,) = await gw.sync()
        assert (conv["conversation_id"], conv["last_seq"], conv["delivered_seq"]) == (cid, 5, 0)
        await gw.ack(cid, 4)
        assert fake_im.rest_acks == [(1, cid, 4)]
        await gw.logout()
        assert gw.token is None
