"""Sessions through the REST API: refresh rotation with reuse detection, logout,
logout everywhere, password change, and one session per device."""

from __future__ import annotations

import pytest

from im.auth import TokenVerifier, load_keys
from im.client import ApiError, GatewayClient
from im.v1 import wire_pb2
from tests.services.gateway.conftest import Suite
from tests.services.gateway.helpers import assert_problem

PASSWORD = "secret-pass-1"


def bearer(login: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {login['access_token']}"}


def sid_of(suite: Suite, login: dict) -> str:
    _, public = load_keys(suite.settings, need_private=False)
    return TokenVerifier(public, suite.settings.jwt_issuer).verify(login["access_token"]).session_id


async def refresh(suite: Suite, token: str) -> tuple[int, dict]:
    r = await suite.client.post("/v1/auth/refresh", json={"refresh_token": token})
    return r.status_code, r.json()


async def me_status(suite: Suite, login: dict) -> int:
    return (await suite.client.get("/v1/users/me", headers=bearer(login))).status_code


async def online(suite: Suite, user_id: int, *devices: str) -> None:
    """As a connector would record them: the gateway kicks through presence."""
    for device in devices:
        await suite.kv.connect(user_id, device, "conn-a", ttl=60)


async def test_login_gives_a_refresh_token_that_rotates(suite: Suite) -> None:
    await suite.register("alice")
    first = await suite.login("alice", "phone")
    assert first["refresh_token"] and first["refresh_expires_in"] == 30 * 86400
    status, second = await refresh(suite, first["refresh_token"])
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    assert second["connector"]["id"] == "conn-a" and second["device_id"] == "phone"
    # Same session: one logout will end every token it was given.
    assert sid_of(suite, second) == sid_of(suite, first)
    assert await me_status(suite, second) == 200
    status, third = await refresh(suite, second["refresh_token"])
    assert status == 200 and await me_status(suite, third) == 200


async def test_a_reused_refresh_token_ends_the_session(suite: Suite) -> None:
    user_id = await suite.register("alice")
    login = await suite.login("alice", "phone")
    await online(suite, user_id, "phone")
    _, rotated = await refresh(suite, login["refresh_token"])
    # The spent token again: a copy is out there. Refused, and the session is over...
    status, body = await refresh(suite, login["refresh_token"])
    assert status == 401 and body["code"] == "unauthorized"
    # ...for whoever holds the newest tokens too, and its socket is kicked.
    assert (await refresh(suite, rotated["refresh_token"]))[0] == 401
    assert await me_status(suite, rotated) == 401
    assert await suite.kv.is_revoked(sid_of(suite, login))  # what connectors check at Auth
    assert [k.session_id for k in suite.connector.kicks] == [sid_of(suite, login)]


async def test_refresh_of_a_logged_out_session_is_refused(suite: Suite) -> None:
    await suite.register("alice")
    login = await suite.login("alice", "phone")
    r = await suite.client.post("/v1/auth/logout", headers=bearer(login))
    assert r.status_code == 204
    assert_problem(
        await suite.client.post("/v1/auth/refresh", json={"refresh_token": login["refresh_token"]}),
        401,
        "unauthorized",
    )
    status, _ = await refresh(suite, "made-up-token")
    assert status == 401
    r = await suite.client.post("/v1/auth/refresh", json={"refresh_token": ""})
    assert_problem(r, 422, "invalid_request")


async def test_logout_all_ends_every_session_and_kicks_every_socket(suite: Suite) -> None:
    alice = await suite.register("alice")
    await suite.register("bob")
    phone = await suite.login("alice", "phone")
    laptop = await suite.login("alice", "laptop")
    bob = await suite.login("bob", "phone")
    await online(suite, alice, "phone", "laptop")
    r = await suite.client.post("/v1/auth/logout-all", headers=bearer(laptop))
    assert r.status_code == 204
    for login in (phone, laptop):
        assert await me_status(suite, login) == 401
        assert (await refresh(suite, login["refresh_token"]))[0] == 401
        assert await suite.kv.is_revoked(sid_of(suite, login))
    kicked = {(k.user_id, k.device_id, k.session_id) for k in suite.connector.kicks}
    assert kicked == {
        (alice, "phone", sid_of(suite, phone)),
        (alice, "laptop", sid_of(suite, laptop)),
    }
    # Other users are untouched; alice logs in again as usual.
    assert await me_status(suite, bob) == 200
    assert await me_status(suite, await suite.login("alice", "phone")) == 200


async def test_password_change_keeps_this_session_and_ends_the_others(suite: Suite) -> None:
    alice = await suite.register("alice")
    phone = await suite.login("alice", "phone")
    laptop = await suite.login("alice", "laptop")
    await online(suite, alice, "phone", "laptop")
    url = "/v1/users/me/password"

    wrong = {"current_password": "not-it", "new_password": "brand-new-pass"}
    assert_problem(
        await suite.client.post(url, json=wrong, headers=bearer(phone)), 401, "invalid_credentials"
    )
    short = {"current_password": PASSWORD, "new_password": "short"}
    assert_problem(
        await suite.client.post(url, json=short, headers=bearer(phone)), 422, "invalid_request"
    )
    assert await me_status(suite, laptop) == 200  # refusals changed nothing

    good = {"current_password": PASSWORD, "new_password": "brand-new-pass"}
    assert (await suite.client.post(url, json=good, headers=bearer(phone))).status_code == 204
    assert await me_status(suite, laptop) == 401
    assert (await refresh(suite, laptop["refresh_token"]))[0] == 401
    assert [(k.device_id, k.session_id, k.reason) for k in suite.connector.kicks] == [
        ("laptop", sid_of(suite, laptop), wire_pb2.KICK_REASON_TOKEN_REVOKED)
    ]
    # This session goes on, refresh included.
    assert await me_status(suite, phone) == 200
    assert (await refresh(suite, phone["refresh_token"]))[0] == 200
    # The new password works, the old one no longer does.
    await suite.login("alice", "tablet", password="brand-new-pass")
    r = await suite.client.post(
        "/v1/auth/login", json={"username": "alice", "password": PASSWORD, "device_id": "x"}
    )
    assert_problem(r, 401, "invalid_credentials")
    assert_problem(await suite.client.post(url, json=good), 401, "unauthorized")


@pytest.mark.parametrize("settings_overrides", [{"login_failures_per_user_address": 2}])
async def test_guessing_the_current_password_backs_off(suite: Suite) -> None:
    await suite.register("alice")
    phone = await suite.login("alice", "phone")
    wrong = {"current_password": "guess", "new_password": "brand-new-pass"}
    statuses = [
        (
            await suite.client.post("/v1/users/me/password", json=wrong, headers=bearer(phone))
        ).status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]


async def test_a_new_login_of_the_same_device_revokes_the_previous_session(
    suite: Suite,
) -> None:
    alice = await suite.register("alice")
    old = await suite.login("alice", "phone")
    laptop = await suite.login("alice", "laptop")
    await online(suite, alice, "phone")
    new = await suite.login("alice", "phone")
    assert await me_status(suite, old) == 401
    assert (await refresh(suite, old["refresh_token"]))[0] == 401
    assert await suite.kv.is_revoked(sid_of(suite, old))
    assert [(k.session_id, k.reason) for k in suite.connector.kicks] == [
        (sid_of(suite, old), wire_pb2.KICK_REASON_DEVICE_LOGGED_IN_ELSEWHERE)
    ]
    assert await me_status(suite, new) == 200
    assert await me_status(suite, laptop) == 200  # another device: untouched


async def test_the_client_library_refreshes_logs_out_everywhere_and_changes_password(
    suite: Suite,
) -> None:
    await suite.register("alice")
    base = str(suite.client.base_url)
    async with GatewayClient(base) as phone, GatewayClient(base) as laptop:
        await phone.login("alice", PASSWORD, "phone")
        await laptop.login("alice", PASSWORD, "laptop")
        before = phone.refresh_token
        result = await phone.refresh()
        assert result.refresh_token == phone.refresh_token != before
        await phone.change_password(PASSWORD, "brand-new-pass")
        assert (await phone.me())["username"] == "alice"
        with pytest.raises(ApiError) as info:
            await laptop.me()  # its access token is revoked and so is its refresh token
        assert info.value.status == 401 and laptop.refresh_token is None
        await laptop.login("alice", "brand-new-pass", "laptop")
        await laptop.logout_all()
        with pytest.raises(ApiError):
            await phone.me()
