"""Blocking and privacy over the gateway's REST API, against real user and group
services: the routes, the neutral refusals, and the membership event that makes
connectors re-check a pair's 1:1 conversation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from im.ids import direct_conversation_id
from im.v1 import bus_pb2
from tests.services.gateway.helpers import assert_problem
from tests.services.gateway.test_groups_api import Tap

if TYPE_CHECKING:
    from .conftest import Suite


async def test_block_and_unblock_publish_an_event_and_show_in_the_list(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, _bob = await suite.user("bob")
    tap = await Tap.at_end(suite, suite.settings.topic_membership)

    r = await suite.client.put(f"/v1/users/{bob_id}/block", headers=alice)
    assert r.status_code == 204, r.text
    assert (await suite.client.put(f"/v1/users/{bob_id}/block", headers=alice)).status_code == 204
    r = await suite.client.get("/v1/users/me/blocks", headers=alice)
    assert r.json() == {"user_ids": [bob_id]}
    r = await suite.client.get(f"/v1/users/{bob_id}", headers=alice)
    assert r.json()["blocked"] is True
    cid = direct_conversation_id(alice_id, bob_id)
    events = await tap.take(bus_pb2.MembershipEvent.FromString)
    assert [key for key, _ in events] == [cid]  # once: the repeat changed nothing

    r = await suite.client.delete(f"/v1/users/{bob_id}/block", headers=alice)
    assert r.status_code == 204
    assert (await suite.client.get("/v1/users/me/blocks", headers=alice)).json()["user_ids"] == []
    assert (await suite.client.get(f"/v1/users/{bob_id}", headers=alice)).json()["blocked"] is False
    assert [key for key, _ in await tap.take(bus_pb2.MembershipEvent.FromString)] == [cid]


async def test_block_refuses_oneself_and_nobody(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    assert_problem(
        await suite.client.put(f"/v1/users/{alice_id}/block", headers=alice), 422, "invalid_request"
    )
    assert_problem(
        await suite.client.put("/v1/users/999999/block", headers=alice), 404, "not_found"
    )
    assert (await suite.client.put("/v1/users/0/block", headers=alice)).status_code == 422
    assert (await suite.client.put(f"/v1/users/{alice_id}/block")).status_code == 401


async def test_a_blocked_user_cannot_add_the_blocker_to_a_group(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    await suite.client.put(f"/v1/users/{bob_id}/block", headers=alice)
    r = await suite.client.post(
        "/v1/groups", json={"name": "g", "member_ids": [alice_id]}, headers=bob
    )
    problem = assert_problem(r, 403, "forbidden")
    assert "block" not in problem["detail"]


async def test_privacy_settings_round_trip_and_contacts_only_refuses_strangers(
    suite: Suite,
) -> None:
    alice_id, alice = await suite.user("alice")
    _bob_id, bob = await suite.user("bob")
    r = await suite.client.get("/v1/users/me/privacy", headers=alice)
    assert r.json() == {"invites_from_contacts_only": False}
    r = await suite.client.patch(
        "/v1/users/me/privacy", json={"invites_from_contacts_only": True}, headers=alice
    )
    assert r.status_code == 200 and r.json() == {"invites_from_contacts_only": True}
    assert (await suite.client.patch("/v1/users/me/privacy", json={}, headers=alice)).json() == {
        "invites_from_contacts_only": True
    }
    r = await suite.client.patch("/v1/users/me/privacy", json={"nope": 1}, headers=alice)
    assert r.status_code == 422
    r = await suite.client.post(
        "/v1/groups", json={"name": "g", "member_ids": [alice_id]}, headers=bob
    )
    assert_problem(r, 403, "forbidden")


async def test_a_rest_send_into_a_blocked_pair_is_refused_neutrally(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    cid = direct_conversation_id(alice_id, bob_id)
    url = f"/v1/conversations/{cid}/messages"
    r = await suite.client.post(url, json={"client_msg_id": "m1", "text": "hi"}, headers=bob)
    assert r.status_code == 202, r.text
    await suite.client.put(f"/v1/users/{bob_id}/block", headers=alice)
    r = await suite.client.post(url, json={"client_msg_id": "m2", "text": "hi?"}, headers=bob)
    problem = assert_problem(r, 403, "forbidden")
    assert "block" not in problem["detail"]
    r = await suite.client.post(url, json={"client_msg_id": "m3", "text": "x"}, headers=alice)
    assert_problem(r, 403, "forbidden")  # the blocker neither


async def test_a_block_hides_presence_both_ways(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    cid = direct_conversation_id(alice_id, bob_id)
    r = await suite.client.post("/v1/conversations/direct", json={"peer_id": bob_id}, headers=alice)
    assert r.status_code == 200, r.text
    await suite.client.put(f"/v1/users/{bob_id}/block", headers=alice)
    for headers, other in ((alice, bob_id), (bob, alice_id)):
        r = await suite.client.get(f"/v1/conversations/{cid}/presence", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["members"] == [{"user_id": other, "online": False, "last_seen_ms": None}]
