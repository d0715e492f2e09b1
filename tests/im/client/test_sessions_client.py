"""The client's side of sessions and limits: Retry-After on errors, and the access
token refreshed by itself, once, however many calls find it expired together."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from im.client import ApiError, GatewayClient


def problem(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"type": "t", "title": code, "status": status, "detail": code, "code": code}
    return httpx.Response(
        status, json=body, headers={"content-type": "application/problem+json", **(headers or {})}
    )


def login_body(access: str, refresh: str) -> dict:
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 600,
        "user_id": 1,
        "device_id": "phone",
        "connector": {"id": "c", "tcp": "127.0.0.1:1", "ws": "ws://127.0.0.1:2/ws"},
        "heartbeat_interval": 20.0,
        "refresh_token": refresh,
        "refresh_expires_in": 2592000,
    }


async def test_retry_after_is_carried_by_the_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return problem(429, "rate_limited", {"Retry-After": "17"})

    async with GatewayClient("http://gw.test", transport=httpx.MockTransport(handler)) as gw:
        with pytest.raises(ApiError) as info:
            await gw.login("alice", "pw", "phone")
    error = info.value
    assert (error.status, error.code, error.retry_after) == (429, "rate_limited", 17.0)
    assert "retry after 17 s" in str(error)
    assert error.to_dict()["retry_after"] == 17.0


async def test_an_expired_token_is_refreshed_once_for_concurrent_calls() -> None:
    refreshes: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/login":
            return httpx.Response(200, json=login_body("a1", "r1"))
        if request.url.path == "/v1/auth/refresh":
            refreshes.append(json.loads(request.content)["refresh_token"])
            await asyncio.sleep(0)  # let the other calls pile up behind the lock
            n = len(refreshes) + 1
            return httpx.Response(200, json=login_body(f"a{n}", f"r{n}"))
        if request.headers["authorization"] == "Bearer a1":
            return problem(401, "unauthorized")  # expired
        return httpx.Response(200, json={"user_id": 1, "username": "alice"})

    async with GatewayClient("http://gw.test", transport=httpx.MockTransport(handler)) as gw:
        await gw.login("alice", "pw", "phone")
        answers = await asyncio.gather(*(gw.me() for _ in range(5)))
        assert all(a["username"] == "alice" for a in answers)
        # One refresh with the one token: a second use of r1 would end the session.
        assert refreshes == ["r1"]
        assert (gw.token, gw.refresh_token) == ("a2", "r2")


async def test_a_session_that_ended_raises_and_forgets_its_tokens() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/login":
            return httpx.Response(200, json=login_body("a1", "r1"))
        return problem(401, "unauthorized")  # revoked: refresh refused too

    async with GatewayClient("http://gw.test", transport=httpx.MockTransport(handler)) as gw:
        await gw.login("alice", "pw", "phone")
        with pytest.raises(ApiError) as info:
            await gw.me()
        assert info.value.status == 401
        assert gw.token is None and gw.refresh_token is None


async def test_wrong_credentials_are_not_mistaken_for_an_expired_token() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/v1/auth/login":
            return httpx.Response(200, json=login_body("a1", "r1"))
        return problem(401, "invalid_credentials")

    async with GatewayClient("http://gw.test", transport=httpx.MockTransport(handler)) as gw:
        await gw.login("alice", "pw", "phone")
        with pytest.raises(ApiError) as info:
            await gw.change_password("wrong", "new password")
        assert info.value.code == "invalid_credentials"
    assert calls == ["/v1/auth/login", "/v1/users/me/password"]  # no refresh
