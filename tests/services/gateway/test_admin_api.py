"""The admin REST API (/v1/admin): its own credentials, and each operation with its
effects on logins, tokens, sockets (kicks) and stored messages."""

from __future__ import annotations

import logging

import pytest
from argon2 import PasswordHasher

from im.events import ERASED
from im.v1 import wire_pb2
from tests.services.gateway.conftest import Suite
from tests.services.gateway.helpers import assert_problem, message

TOKEN = "admin-token-for-tests-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {TOKEN}", "X-Admin-Actor": "ops-tester"}
PASSWORD = "secret-pass-1"


@pytest.fixture
def settings_overrides() -> dict:
    """The suite of these tests has an admin token (a test that wants none says so)."""
    return {"admin_token": TOKEN, "admin_grpc_port": 0, "admin_failures_per_address": 3}


def bearer(login: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {login['access_token']}"}


async def login_status(suite: Suite, username: str, password: str = PASSWORD) -> int:
    r = await suite.client.post(
        "/v1/auth/login",
        json={"username": username, "password": password, "device_id": "phone"},
    )
    return r.status_code


async def test_admin_routes_refuse_no_token_a_wrong_one_and_a_user_token(suite: Suite) -> None:
    user_id, user_headers = await suite.user("alice")
    path = f"/v1/admin/users/{user_id}/sessions"
    assert_problem(await suite.client.get(path), 401, "unauthorized")
    wrong = {"Authorization": "Bearer " + "x" * 40}
    assert_problem(await suite.client.get(path, headers=wrong), 401, "unauthorized")
    # A user's own access token is no admin token, whoever the user is.
    assert_problem(await suite.client.get(path, headers=user_headers), 401, "unauthorized")
    r = await suite.client.post(f"/v1/admin/users/{user_id}/disable", headers=user_headers)
    assert_problem(r, 401, "unauthorized")
    # Three wrong tokens from this address: it now waits, even with the right one.
    body = assert_problem(await suite.client.get(path, headers=ADMIN), 429, "rate_limited")
    assert body["retry_after"] >= 1


@pytest.mark.parametrize("settings_overrides", [{}])
async def test_without_a_configured_token_the_admin_api_is_off(suite: Suite) -> None:
    user_id, _ = await suite.user("alice")
    r = await suite.client.post(f"/v1/admin/users/{user_id}/disable", headers=ADMIN)
    assert_problem(r, 403, "admin_api_disabled")
    assert "admin_grpc" not in suite.gateway.endpoints()


async def test_disable_ends_sessions_kicks_refuses_login_and_enable_undoes_it(
    suite: Suite, caplog: pytest.LogCaptureFixture
) -> None:
    user_id = await suite.register("alice")
    login = await suite.login("alice")
    await suite.kv.connect(user_id, "phone", "conn-a", ttl=60)
    caplog.set_level(logging.INFO, logger="im.audit")

    r = await suite.client.post(f"/v1/admin/users/{user_id}/disable", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["disabled"] is True and r.json()["sessions_ended"] == 1
    kicked = {(k.user_id, k.device_id, k.reason) for k in suite.connector.kicks}
    assert (user_id, "", wire_pb2.KICK_REASON_TOKEN_REVOKED) in kicked  # every device
    assert (await suite.client.get("/v1/users/me", headers=bearer(login))).status_code == 401
    refresh = {"refresh_token": login["refresh_token"]}
    assert (await suite.client.post("/v1/auth/refresh", json=refresh)).status_code == 401
    r = await suite.client.post(
        "/v1/auth/login", json={"username": "alice", "password": PASSWORD, "device_id": "x"}
    )
    assert_problem(r, 403, "account_disabled")
    assert any(
        f"admin disable user:{user_id} by admin(ops-tester)@127.0.0.1 via rest: ok" in m
        for m in caplog.messages
    ), caplog.messages

    r = await suite.client.post(f"/v1/admin/users/{user_id}/enable", headers=ADMIN)
    assert r.status_code == 200 and r.json()["user"]["disabled"] is False
    assert await login_status(suite, "alice") == 200


async def test_reset_password_answers_a_generated_one_once(suite: Suite) -> None:
    user_id = await suite.register("bob")
    login = await suite.login("bob")
    r = await suite.client.post(f"/v1/admin/users/{user_id}/reset-password", headers=ADMIN)
    assert r.status_code == 200, r.text
    generated = r.json()["password"]
    assert r.json()["sessions_ended"] == 1
    assert (await suite.client.get("/v1/users/me", headers=bearer(login))).status_code == 401
    assert await login_status(suite, "bob") == 401
    assert await login_status(suite, "bob", generated) == 200

    r = await suite.client.post(
        f"/v1/admin/users/{user_id}/reset-password",
        headers=ADMIN,
        json={"password": "operator-chose-1"},
    )
    assert r.status_code == 200 and "password" not in r.json()
    assert await login_status(suite, "bob", "operator-chose-1") == 200
    r = await suite.client.post(
        f"/v1/admin/users/{user_id}/reset-password", headers=ADMIN, json={"password": "short"}
    )
    assert_problem(r, 422, "invalid_request")


async def test_delete_keeps_messages_from_a_deleted_user_or_erases_them(suite: Suite) -> None:
    carol_id = await suite.register("carol")
    dave_id, dave_headers = await suite.user("dave")
    conv = f"d:{min(carol_id, dave_id)}:{max(carol_id, dave_id)}"
    await suite.store.insert_many(
        [
            message(conv, 1, carol_id, b"from carol"),
            message(conv, 2, dave_id, b"from dave"),
            message(conv, 3, carol_id, b"carol again"),
        ]
    )
    r = await suite.client.delete(f"/v1/admin/users/{carol_id}", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["messages_erased"] == 0 and r.json()["user"]["deleted"] is True
    shown = (await suite.client.get(f"/v1/users/{carol_id}", headers=dave_headers)).json()
    assert shown["deleted"] is True and shown["display_name"] == "Deleted user"
    assert [m.body for m in await suite.store.history(conv, 0, 10)] == [
        b"from carol",
        b"from dave",
        b"carol again",
    ]
    assert await login_status(suite, "carol") == 401

    r = await suite.client.delete(
        f"/v1/admin/users/{carol_id}", params={"erase_messages": "true"}, headers=ADMIN
    )
    assert r.status_code == 200 and r.json()["messages_erased"] == 2
    stored = await suite.store.history(conv, 0, 10)
    assert [(m.seq, m.body, m.content_type) for m in stored] == [
        (1, b"", ERASED),
        (2, b"from dave", "text/plain"),
        (3, b"", ERASED),
    ]
    r = await suite.client.delete(f"/v1/admin/users/{carol_id}?erase_messages=true", headers=ADMIN)
    assert r.json()["messages_erased"] == 0  # nothing left to erase
    assert_problem(
        await suite.client.delete("/v1/admin/users/999999", headers=ADMIN), 404, "not_found"
    )
    r = await suite.client.post(f"/v1/admin/users/{carol_id}/enable", headers=ADMIN)
    assert_problem(r, 409, "user_deleted")


async def test_sessions_show_devices_and_where_they_are_online(suite: Suite) -> None:
    user_id = await suite.register("erin")
    await suite.login("erin", "phone")
    await suite.login("erin", "laptop")
    await suite.kv.connect(user_id, "phone", "conn-a", ttl=60)
    r = await suite.client.get(f"/v1/admin/users/{user_id}/sessions", headers=ADMIN)
    assert r.status_code == 200, r.text
    by_device = {s["device_id"]: s for s in r.json()["sessions"]}
    assert set(by_device) == {"phone", "laptop"}
    assert by_device["phone"]["online"] and by_device["phone"]["connector_id"] == "conn-a"
    assert not by_device["laptop"]["online"] and by_device["laptop"]["connector_id"] is None
    assert by_device["phone"]["last_seen_at"] >= by_device["phone"]["created_at"] > 0
    found = await suite.client.get("/v1/admin/users", params={"username": "ERIN"}, headers=ADMIN)
    assert [u["user_id"] for u in found.json()["users"]] == [user_id]
    r = await suite.client.get(f"/v1/admin/users/{user_id}", headers=ADMIN)
    assert r.json()["username"] == "erin" and r.json()["disabled"] is False


async def test_ids_beyond_64_bits_are_422(suite: Suite) -> None:
    for user_id in (2**63, 2**70):
        r = await suite.client.get("/v1/admin/users", params={"user_id": user_id}, headers=ADMIN)
        assert_problem(r, 422, "invalid_request")
        r = await suite.client.get(f"/v1/admin/users/{user_id}/sessions", headers=ADMIN)
        assert_problem(r, 422, "invalid_request")
    r = await suite.client.get("/v1/admin/users", params={"user_id": 2**63 - 1}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["users"] == []


async def test_import_reports_duplicates_and_imports_the_others(suite: Suite) -> None:
    await suite.register("taken")
    hashed = PasswordHasher(time_cost=1, memory_cost=8192).hash("imported-pass-1")
    users = [{"username": f"imp{i}", "password_hash": hashed} for i in range(600)]
    users += [{"username": "taken", "password_hash": hashed}, {"username": "imp7"}]
    users.append({"username": "nopass", "display_name": "No Password"})
    # Larger than the usual body limit (64 KiB): the import has a limit of its own.
    r = await suite.client.post("/v1/admin/users/import", headers=ADMIN, json={"users": users})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["imported"] == 601
    assert [(e["index"], e["code"]) for e in result["errors"]] == [
        (600, "username_taken"),
        (601, "duplicate_in_request"),
    ]
    assert await login_status(suite, "imp599", "imported-pass-1") == 200
    assert await login_status(suite, "nopass", "anything-at-all") == 401
    bad = await suite.client.post("/v1/admin/users/import", headers=ADMIN, json={"users": "no"})
    assert_problem(bad, 422, "invalid_request")
    r = await suite.client.post("/v1/admin/users/import", json={"users": users})
    assert_problem(r, 401, "unauthorized")


async def test_disabling_again_completes_a_revocation_the_store_missed(suite: Suite) -> None:
    user_id = await suite.register("fay")
    login = await suite.login("fay")
    real = suite.backends.sessions

    class Down:
        async def revoke(self, session_id: str, ttl: float) -> None:
            raise ConnectionError("revocation store down")

        async def is_revoked(self, session_id: str) -> bool:
            return await real.is_revoked(session_id)

    suite.backends.sessions = Down()  # type: ignore[assignment]
    r = await suite.client.post(f"/v1/admin/users/{user_id}/disable", headers=ADMIN)
    assert_problem(r, 503, "unavailable")
    suite.backends.sessions = real
    # The table says disabled, but the access token still works: run it again.
    assert (await suite.client.get("/v1/users/me", headers=bearer(login))).status_code == 200
    r = await suite.client.post(f"/v1/admin/users/{user_id}/disable", headers=ADMIN)
    assert r.status_code == 200 and r.json()["sessions_ended"] == 0
    assert (await suite.client.get("/v1/users/me", headers=bearer(login))).status_code == 401
