"""The gateway's REST API over a real socket, against real user and group services."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import pytest

from im.auth import TokenVerifier, load_keys
from im.ids import direct_conversation_id
from im.ports import BackendUnavailable, ConnectorInfo
from im.v1 import group_pb2, wire_pb2
from tests.services.gateway.helpers import assert_problem, message

if TYPE_CHECKING:
    from .conftest import Suite


async def direct(suite: Suite, headers: dict[str, str], peer_id: int) -> dict:
    r = await suite.client.post(
        "/v1/conversations/direct", json={"peer_id": peer_id}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()


async def conversation(suite: Suite, headers: dict[str, str], cid: str) -> dict:
    r = await suite.client.get("/v1/conversations", headers=headers)
    assert r.status_code == 200, r.text
    return next(c for c in r.json()["conversations"] if c["conversation_id"] == cid)


# ------------------------------------------------------------------------ auth
async def test_register(suite: Suite) -> None:
    r = await suite.client.post(
        "/v1/auth/register",
        json={"username": "alice", "password": "secret-pass-1", "display_name": "Alice"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["username"] == "alice" and body["display_name"] == "Alice"
    assert isinstance(body["user_id"], int) and body["user_id"] > 0

    again = await suite.client.post(
        "/v1/auth/register", json={"username": "alice", "password": "another-pass-2"}
    )
    assert_problem(again, 409, "username_taken")

    missing = await suite.client.post("/v1/auth/register", json={"username": "bob"})
    body = assert_problem(missing, 422, "invalid_request")
    assert "password" in body["detail"]

    empty = await suite.client.post("/v1/auth/register", json={"username": "", "password": "x"})
    assert_problem(empty, 422, "invalid_request")

    # The user service's own shape rules come back as 422 with its explanation.
    bad_name = await suite.client.post(
        "/v1/auth/register", json={"username": "a b", "password": "secret-pass-1"}
    )
    assert "username" in assert_problem(bad_name, 422, "invalid_request")["detail"]

    garbage = await suite.client.post(
        "/v1/auth/register", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_problem(garbage, 422, "invalid_request")


async def test_validation_errors_do_not_echo_passwords(suite: Suite) -> None:
    r = await suite.client.post(
        "/v1/auth/login",
        json={"username": "alice", "password": "hunter2-secret", "device_id": "bad device!"},
    )
    body = assert_problem(r, 422, "invalid_request")
    assert "device_id" in body["detail"]
    assert "hunter2-secret" not in r.text


async def test_login(suite: Suite) -> None:
    user_id = await suite.register("alice")
    body = await suite.login("alice", "phone-1")
    assert body["token_type"] == "Bearer"
    assert body["user_id"] == user_id
    assert body["device_id"] == "phone-1"
    assert body["expires_in"] == suite.settings.jwt_ttl_seconds
    assert body["heartbeat_interval"] == suite.settings.heartbeat_interval
    assert body["connector"] == {
        "id": "conn-a",
        "tcp": "127.0.0.1:7070",
        "ws": "ws://127.0.0.1:7071/ws",
        "tls": False,
    }
    # Connectors verify with the public key alone.
    _, public = load_keys(suite.settings, need_private=False)
    claims = TokenVerifier(public, suite.settings.jwt_issuer).verify(body["access_token"])
    assert claims.user_id == user_id
    assert claims.device_id == "phone-1"
    assert claims.session_id


@pytest.mark.parametrize("device_id", ["", "has space", "x" * 65, "slash/no", "é"])
async def test_login_rejects_bad_device_ids(suite: Suite, device_id: str) -> None:
    r = await suite.client.post(
        "/v1/auth/login",
        json={"username": "alice", "password": "secret-pass-1", "device_id": device_id},
    )
    assert_problem(r, 422, "invalid_request")


async def test_login_accepts_every_allowed_device_character(suite: Suite) -> None:
    await suite.register("alice")
    body = await suite.login("alice", "Az09_.:-" + "x" * 56)
    assert body["device_id"].startswith("Az09_.:-")


async def test_wrong_password_and_unknown_user(suite: Suite) -> None:
    await suite.register("alice")
    for username, password in [("alice", "wrong-password"), ("nobody", "secret-pass-1")]:
        r = await suite.client.post(
            "/v1/auth/login",
            json={"username": username, "password": password, "device_id": "phone"},
        )
        assert_problem(r, 401, "invalid_credentials")


async def test_no_connector(suite: Suite) -> None:
    await suite.register("alice")
    await suite.registry.deregister("conn-a")
    r = await suite.client.post(
        "/v1/auth/login",
        json={"username": "alice", "password": "secret-pass-1", "device_id": "phone"},
    )
    assert_problem(r, 503, "no_connector")


async def test_connector_assignment(suite: Suite) -> None:
    user_id = await suite.register("alice")
    # conn-b and conn-c are addresses nobody answers at: the prober would take them
    # out of the choice if it ran between their registering and the login.
    await suite.gateway.gateway._prober.stop()
    # conn-a has 3 connections; two emptier ones tie and the smaller id wins.
    await suite.registry.register(ConnectorInfo("conn-c", "10.0.0.3", 1, 2, 3, connections=1))
    await suite.registry.register(ConnectorInfo("conn-b", "10.0.0.2", 4, 5, 6, connections=1))
    assert (await suite.login("alice", "new-device"))["connector"]["id"] == "conn-b"

    # A device still connected somewhere goes back there, even if it is busier.
    await suite.kv.connect(user_id, "phone", "conn-a", ttl=60)
    body = await suite.login("alice", "phone")
    assert body["connector"]["id"] == "conn-a"

    # ...unless that connector has left the registry. conn-b got "new-device" a moment
    # ago, which its registry figure does not show yet: conn-c is less loaded now.
    await suite.kv.connect(user_id, "tablet", "conn-gone", ttl=60)
    assert (await suite.login("alice", "tablet"))["connector"]["id"] == "conn-c"


async def test_a_burst_of_logins_is_spread_over_connectors(suite: Suite) -> None:
    await suite.register("alice")
    # conn-b and conn-c are addresses nobody answers at: the prober would take them
    # out of the choice before a slow run's sixth login.
    await suite.gateway.gateway._prober.stop()
    await suite.registry.register(ConnectorInfo("conn-b", "10.0.0.2", 4, 5, 6, connections=0))
    await suite.registry.register(ConnectorInfo("conn-c", "10.0.0.3", 1, 2, 3, connections=0))
    chosen = [(await suite.login("alice", f"dev-{i}"))["connector"]["id"] for i in range(6)]
    counts = {cid: chosen.count(cid) for cid in set(chosen)}
    # conn-a (3 connections) gets none until the others catch up with it.
    assert counts == {"conn-b": 3, "conn-c": 3}


async def test_logout_revokes_and_kicks(suite: Suite) -> None:
    user_id = await suite.register("alice")
    phone = await suite.login("alice", "phone")
    laptop = await suite.login("alice", "laptop")
    await suite.kv.connect(user_id, "phone", "conn-a", ttl=60)
    headers = {"Authorization": f"Bearer {phone['access_token']}"}
    assert (await suite.client.get("/v1/users/me", headers=headers)).status_code == 200

    r = await suite.client.post("/v1/auth/logout", headers=headers)
    assert r.status_code == 204, r.text
    assert r.content == b""

    after = await suite.client.get("/v1/users/me", headers=headers)
    assert_problem(after, 401, "unauthorized")
    assert after.headers["www-authenticate"] == "Bearer"
    again = await suite.client.post("/v1/auth/logout", headers=headers)
    assert_problem(again, 401, "unauthorized")

    _, public = load_keys(suite.settings, need_private=False)
    session_id = (
        TokenVerifier(public, suite.settings.jwt_issuer).verify(phone["access_token"]).session_id
    )
    assert len(suite.connector.kicks) == 1
    kick = suite.connector.kicks[0]
    assert kick.user_id == user_id
    assert kick.device_id == "phone"
    assert kick.session_id == session_id
    assert kick.reason == wire_pb2.KICK_REASON_TOKEN_REVOKED

    # Other sessions of the same user are untouched.
    other = {"Authorization": f"Bearer {laptop['access_token']}"}
    assert (await suite.client.get("/v1/users/me", headers=other)).status_code == 200


async def test_logout_succeeds_when_the_connector_is_unreachable(suite: Suite) -> None:
    user_id, headers = await suite.user("alice")
    await suite.registry.register(ConnectorInfo("conn-dead", "127.0.0.1", 1, 2, 9))
    await suite.kv.connect(user_id, "phone", "conn-dead", ttl=60)
    r = await suite.client.post("/v1/auth/logout", headers=headers)
    assert r.status_code == 204
    assert_problem(await suite.client.get("/v1/users/me", headers=headers), 401, "unauthorized")


async def test_bearer_required(suite: Suite) -> None:
    for headers in [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic abc"}]:
        r = await suite.client.get("/v1/users/me", headers=headers)
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"


# ----------------------------------------------------------------------- users
async def test_users(suite: Suite) -> None:
    alice_id, headers = await suite.user("alice")
    bob_id = await suite.register("bob")

    me = (await suite.client.get("/v1/users/me", headers=headers)).json()
    assert me["user_id"] == alice_id and me["username"] == "alice"
    assert set(me) == {"user_id", "username", "display_name", "created_at", "deleted"}
    assert me["deleted"] is False
    assert me["created_at"] > 1_600_000_000_000  # milliseconds

    bob = await suite.client.get(f"/v1/users/{bob_id}", headers=headers)
    assert bob.status_code == 200 and bob.json()["username"] == "bob"
    assert_problem(await suite.client.get("/v1/users/999999", headers=headers), 404, "not_found")
    assert_problem(await suite.client.get("/v1/users/abc", headers=headers), 422, "invalid_request")

    found = await suite.client.get("/v1/users", params={"username": "bob"}, headers=headers)
    assert found.status_code == 200
    assert [u["user_id"] for u in found.json()["users"]] == [bob_id]
    none = await suite.client.get("/v1/users", params={"username": "nobody"}, headers=headers)
    assert none.json() == {"users": []}
    assert_problem(await suite.client.get("/v1/users", headers=headers), 422, "invalid_request")


# --------------------------------------------------------------- conversations
async def test_direct_conversation(suite: Suite) -> None:
    alice_id, headers = await suite.user("alice")
    bob_id = await suite.register("bob")

    conv = await direct(suite, headers, bob_id)
    assert conv == {
        "conversation_id": direct_conversation_id(alice_id, bob_id),
        "kind": "direct",
        "name": conv["name"],
        "peer_id": bob_id,
        "last_seq": 0,
        "delivered_seq": 0,
        "read_seq": 0,
        "unread": 0,
        "dissolved": False,
        # The list's own: the 1:1 answer carries neither.
        "last_activity_at": 0,
        "settings": None,
    }
    assert (await direct(suite, headers, bob_id))["conversation_id"] == conv["conversation_id"]

    r = await suite.client.post(
        "/v1/conversations/direct", json={"peer_id": alice_id}, headers=headers
    )
    assert_problem(r, 422, "invalid_request")
    r = await suite.client.post(
        "/v1/conversations/direct", json={"peer_id": 987654}, headers=headers
    )
    assert_problem(r, 404, "not_found")


async def test_conversations_and_sync(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    carol_id = await suite.register("carol")
    cid = (await direct(suite, alice, bob_id))["conversation_id"]
    group = await suite.groups.CreateGroup(
        group_pb2.CreateGroupRequest(owner_id=alice_id, name="team", member_ids=[bob_id, carol_id])
    )
    gid = group.conversation.conversation_id
    await suite.store.insert_many([message(cid, s, alice_id) for s in (1, 2, 3)])
    await suite.store.insert_many([message(gid, 1, carol_id)])

    listed = await suite.client.get("/v1/conversations", headers=bob)
    synced = await suite.client.get("/v1/sync", headers=bob)
    assert listed.status_code == synced.status_code == 200
    assert listed.json() == synced.json()
    by_id = {c["conversation_id"]: c for c in listed.json()["conversations"]}
    assert set(by_id) == {cid, gid}
    assert by_id[cid]["kind"] == "direct" and by_id[cid]["peer_id"] == alice_id
    assert by_id[cid]["last_seq"] == 3 and by_id[cid]["unread"] == 3
    assert by_id[gid] == {
        "conversation_id": gid,
        "kind": "group",
        "name": "team",
        "peer_id": None,
        "last_seq": 1,
        "delivered_seq": 0,
        "read_seq": 0,
        "unread": 1,
        "dissolved": False,
        "last_activity_at": by_id[gid]["last_activity_at"],
        "settings": {
            "muted": False,
            "muted_until": 0,
            "pinned": False,
            "archived": False,
            "name": "",
            "updated_at": 0,
        },
    }

    r = await suite.client.post(f"/v1/conversations/{cid}/read", json={"seq": 2}, headers=bob)
    assert r.status_code == 204
    after = await conversation(suite, bob, cid)
    assert after["read_seq"] == 2 and after["unread"] == 1


async def test_history_paging(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id = await suite.register("bob")
    cid = (await direct(suite, alice, bob_id))["conversation_id"]
    msgs = [message(cid, s, alice_id) for s in range(1, 6)]
    msgs.append(message(cid, 6, bob_id, body=b"\xff\x00binary", content_type="image/png"))
    await suite.store.insert_many(msgs)
    url = f"/v1/conversations/{cid}/messages"

    page = (await suite.client.get(url, params={"limit": 2}, headers=alice)).json()
    assert [m["seq"] for m in page["messages"]] == [1, 2] and page["has_more"] is True
    first = page["messages"][0]
    assert first == {
        "msg_id": str(msgs[0].msg_id),
        "conversation_id": cid,
        "seq": 1,
        "sender_id": alice_id,
        "sender_device": "phone",
        "client_msg_id": "c1",
        "content_type": "text/plain",
        "body_b64": base64.b64encode(b"hello 1").decode(),
        "text": "hello 1",
        "server_ts": 1_800_000_000_001,
        "refers_to": None,
        "edited_at": None,
        "recalled": False,
        "attachment_ids": [],
    }

    page = (await suite.client.get(url, params={"after_seq": 2, "limit": 3}, headers=alice)).json()
    assert [m["seq"] for m in page["messages"]] == [3, 4, 5] and page["has_more"] is True
    page = (await suite.client.get(url, params={"after_seq": 5, "limit": 1}, headers=alice)).json()
    assert [m["seq"] for m in page["messages"]] == [6] and page["has_more"] is False
    binary = page["messages"][0]
    assert binary["text"] is None
    assert base64.b64decode(binary["body_b64"]) == b"\xff\x00binary"

    page = (await suite.client.get(url, headers=alice)).json()
    assert len(page["messages"]) == 6 and page["has_more"] is False
    page = (await suite.client.get(url, params={"after_seq": 6}, headers=alice)).json()
    assert page == {"messages": [], "has_more": False}

    for params in [{"limit": 0}, {"limit": 501}, {"after_seq": -1}, {"limit": "x"}]:
        assert_problem(
            await suite.client.get(url, params=params, headers=alice), 422, "invalid_request"
        )


async def test_history_respects_joined_seq(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    group = await suite.groups.CreateGroup(
        group_pb2.CreateGroupRequest(owner_id=alice_id, name="g", member_ids=[])
    )
    gid = group.conversation.conversation_id
    await suite.store.insert_many([message(gid, s, alice_id) for s in (1, 2, 3)])
    await suite.groups.AddMembers(
        group_pb2.AddMembersRequest(
            conversation_id=gid, actor_id=alice_id, user_ids=[bob_id], at_seq=2
        )
    )
    page = (await suite.client.get(f"/v1/conversations/{gid}/messages", headers=bob)).json()
    assert [m["seq"] for m in page["messages"]] == [3]
    assert (await conversation(suite, bob, gid))["unread"] == 1
    page = (await suite.client.get(f"/v1/conversations/{gid}/messages", headers=alice)).json()
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3]


async def test_non_member_is_forbidden(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id = await suite.register("bob")
    _, carol = await suite.user("carol")
    cid = (await direct(suite, alice, bob_id))["conversation_id"]
    await suite.store.insert_many([message(cid, 1, alice_id)])

    for path in [f"/v1/conversations/{cid}/messages", "/v1/conversations/g:424242/messages"]:
        assert_problem(await suite.client.get(path, headers=carol), 403, "forbidden")
    for verb in ("ack", "read"):
        r = await suite.client.post(
            f"/v1/conversations/{cid}/{verb}", json={"seq": 1}, headers=carol
        )
        assert_problem(r, 403, "forbidden")
    r = await suite.client.get("/v1/conversations/bogus/messages", headers=carol)
    assert_problem(r, 404, "not_found")


async def test_ack_and_read_move_forward_only(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    cid = (await direct(suite, alice, bob_id))["conversation_id"]
    await suite.store.insert_many([message(cid, s, alice_id) for s in range(1, 11)])

    async def post(verb: str, seq: int) -> None:
        r = await suite.client.post(
            f"/v1/conversations/{cid}/{verb}", json={"seq": seq}, headers=bob
        )
        assert r.status_code == 204, r.text

    async def cursors() -> tuple[int, int, int]:
        c = await conversation(suite, bob, cid)
        return c["delivered_seq"], c["read_seq"], c["unread"]

    await post("ack", 5)
    assert await cursors() == (5, 0, 10)
    await post("ack", 3)  # never back
    assert await cursors() == (5, 0, 10)
    await post("read", 4)  # read does not pull delivered back either
    assert await cursors() == (5, 4, 6)
    await post("read", 7)  # read raises delivered
    assert await cursors() == (7, 7, 3)
    await post("read", 2)
    assert await cursors() == (7, 7, 3)
    await post("ack", 0)
    assert await cursors() == (7, 7, 3)
    await post("read", 1000)  # capped at the last stored message
    assert await cursors() == (10, 10, 0)

    r = await suite.client.post(f"/v1/conversations/{cid}/ack", json={"seq": -1}, headers=bob)
    assert_problem(r, 422, "invalid_request")
    r = await suite.client.post(f"/v1/conversations/{cid}/read", json={}, headers=bob)
    assert_problem(r, 422, "invalid_request")


# ------------------------------------------------------------------ operations
async def test_health_and_readiness(suite: Suite) -> None:
    assert (await suite.client.get("/healthz")).status_code == 200
    r = await suite.client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "checks": {
            "user": "ok",
            "group": "ok",
            "message_store": "ok",
            "registry": "ok",
            "connectors": "ok",
            "routers": "ok",
            "bus": "ok",
            "presence": "ok",
        },
    }
    await suite.registry.deregister("conn-a")
    r = await suite.client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["connectors"] != "ok"
    assert body["checks"]["user"] == body["checks"]["group"] == "ok"


async def test_not_ready_while_no_router_serves(suite: Suite) -> None:
    # Sends would be acked and never delivered: a load balancer must know.
    await suite.registry.announce_router("router-a", False)
    await suite.registry.withdraw_router("router-test")
    r = await suite.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["routers"] == "no router serving"
    await suite.registry.withdraw_router("router-a")
    r = await suite.client.get("/readyz")
    assert r.json()["checks"]["routers"] == "no router registered"
    await suite.registry.announce_router("router-b", True)
    r = await suite.client.get("/readyz")
    assert r.status_code == 200, r.text


async def test_docs_openapi_and_metrics(suite: Suite) -> None:
    docs = await suite.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = (await suite.client.get("/openapi.json")).json()
    for path in [
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/auth/logout",
        "/v1/users/me",
        "/v1/users/{user_id}",
        "/v1/users",
        "/v1/conversations/direct",
        "/v1/conversations",
        "/v1/sync",
        "/v1/conversations/{conversation_id}/messages",
        "/v1/conversations/{conversation_id}/ack",
        "/v1/conversations/{conversation_id}/read",
        "/healthz",
        "/readyz",
    ]:
        assert path in spec["paths"], path
    login = spec["components"]["schemas"]["LoginRequest"]["properties"]["device_id"]
    assert login["description"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]

    assert_problem(await suite.client.get("/nope"), 404, "not_found")
    assert_problem(await suite.client.get("/v1/users/me"), 401, "unauthorized")
    metrics = await suite.client.get("/metrics")
    assert metrics.status_code == 200
    assert 'route="/docs",status="200"' in metrics.text
    assert 'route="/openapi.json",status="200"' in metrics.text
    assert 'route="unmatched",status="404"' in metrics.text
    assert 'route="/v1/users/me",status="401"' in metrics.text
    assert "im_gateway_http_request_duration_seconds" in metrics.text


async def test_unexpected_errors_are_opaque(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    _, headers = await suite.user("alice")

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(suite.gateway.gateway, "get_users", broken)
    r = await suite.client.get("/v1/users/me", headers=headers)
    body = assert_problem(r, 500, "internal")
    assert "secret internals" not in r.text and body["detail"] == "internal error"
    # The server keeps serving.
    assert (await suite.client.get("/healthz")).status_code == 200


class DownKV:
    """Sessions and rate limits on a store that is down (a Redis restarting)."""

    async def is_revoked(self, session_id: str) -> bool:
        raise BackendUnavailable("redis", "connection refused")

    async def hit(self, key: str, limit: int, window: float) -> float:
        raise BackendUnavailable("redis", "connection refused")

    async def blocked(self, keys: list[str]) -> float:
        raise BackendUnavailable("redis", "connection refused")

    async def fail(self, key: str, backoff: object) -> float:
        raise BackendUnavailable("redis", "connection refused")

    async def forgive(self, key: str) -> None:
        raise BackendUnavailable("redis", "connection refused")


async def test_a_down_session_store_degrades_instead_of_failing_requests(
    suite: Suite, caplog: pytest.LogCaptureFixture
) -> None:
    _, headers = await suite.user("dora")
    suite.backends.sessions = suite.backends.rate_limits = DownKV()  # type: ignore[assignment]
    assert (await suite.client.get("/v1/users/me", headers=headers)).status_code == 200
    await suite.login("dora", device_id="tablet")  # the login limit is skipped, not fatal
    wrong = {"username": "dora", "password": "not-hers", "device_id": "d"}
    assert (await suite.client.post("/v1/auth/login", json=wrong)).status_code == 401
    await suite.register("dora2")  # so is the registration limit
    assert "failed logins are not limited" in caplog.text
    assert "logged-out tokens are accepted until they expire" in caplog.text


class Unhealthy:
    async def healthy(self) -> bool:
        return False


async def test_not_ready_while_the_bus_or_presence_is_down(suite: Suite) -> None:
    bus, presence = suite.backends.bus, suite.backends.presence
    try:
        suite.backends.bus = Unhealthy()  # type: ignore[assignment]
        r = await suite.client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["bus"] == "unhealthy"
        suite.backends.bus, suite.backends.presence = bus, Unhealthy()  # type: ignore[assignment]
        r = await suite.client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["presence"] == "unhealthy"
    finally:
        suite.backends.bus, suite.backends.presence = bus, presence
