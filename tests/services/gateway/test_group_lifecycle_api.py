"""The group lifecycle over the gateway's REST API (real user and group services):
who may do what, invite links (expired, revoked, used up), the approval flow, a
dissolved group, and the system events each change publishes on the messages topic."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, update

from im import events
from im.db import GroupInviteRow
from im.sending import SERVER_KEY_PREFIX
from im.v1 import bus_pb2, wire_pb2
from services.gateway.group_events import event_client_msg_id
from tests.services.gateway.helpers import assert_problem
from tests.services.gateway.test_groups_api import Tap, create, members_of

if TYPE_CHECKING:
    from .conftest import Suite

Headers = dict[str, str]


async def event_tap(suite: Suite) -> Tap:
    return await Tap.at_end(suite, suite.settings.topic_messages)


async def events_of(tap: Tap) -> list[wire_pb2.Message]:
    records = await tap.take(bus_pb2.InboundMessage.FromString)
    return [r.message for _, r in records]


def kinds_and_bodies(messages: list[wire_pb2.Message]) -> list[tuple[str, dict]]:
    prefix = events.GROUP_EVENT_PREFIX
    return [(m.content_type.removeprefix(prefix), json.loads(m.body)) for m in messages]


async def team(suite: Suite) -> tuple[str, dict[str, tuple[int, Headers]]]:
    """A group of alice (owner), bob (admin) and carol; dave is not in it."""
    people = {name: await suite.user(name) for name in ("alice", "bob", "carol", "dave")}
    ids = [people[n][0] for n in ("bob", "carol")]
    gid = (await create(suite, people["alice"][1], member_ids=ids))["conversation_id"]
    r = await suite.client.patch(
        f"/v1/groups/{gid}/members/{people['bob'][0]}",
        json={"role": "admin"},
        headers=people["alice"][1],
    )
    assert r.status_code == 200, r.text
    return gid, people


async def test_rename_describe_and_avatar_are_events_sent_by_the_actor(suite: Suite) -> None:
    gid, people = await team(suite)
    (bob_id, bob), (_, carol) = people["bob"], people["carol"]
    tap = await event_tap(suite)

    r = await suite.client.patch(
        f"/v1/groups/{gid}",
        json={"name": "crew", "description": "we row", "avatar": "https://img.example/c.png"},
        headers=bob,
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "crew" and r.json()["description"] == "we row"
    sent = await events_of(tap)
    assert kinds_and_bodies(sent) == [
        ("renamed", {"actor_id": bob_id, "name": "crew"}),
        ("description_changed", {"actor_id": bob_id, "description": "we row"}),
        ("avatar_changed", {"actor_id": bob_id, "avatar": "https://img.example/c.png"}),
    ]
    assert {m.sender_id for m in sent} == {bob_id}
    assert {m.conversation_id for m in sent} == {gid}
    assert len({m.client_msg_id for m in sent}) == 3

    # The same again changes nothing and says nothing.
    r = await suite.client.patch(f"/v1/groups/{gid}", json={"name": "crew"}, headers=bob)
    assert r.status_code == 200 and await events_of(tap) == []

    assert_problem(
        await suite.client.patch(f"/v1/groups/{gid}", json={"name": "x"}, headers=carol),
        403,
        "forbidden",
    )
    for body in ({}, {"avatar": "javascript:alert(1)"}, {"name": ""}, {"name": "a\u202eb"}):
        r = await suite.client.patch(f"/v1/groups/{gid}", json=body, headers=bob)
        assert_problem(r, 422, "invalid_request")
    outsider = people["dave"][1]
    r = await suite.client.patch(f"/v1/groups/{gid}", json={"name": "x"}, headers=outsider)
    assert_problem(r, 403, "forbidden")


async def test_membership_changes_are_events_in_order(suite: Suite) -> None:
    gid, people = await team(suite)
    (alice_id, alice), (bob_id, _), (carol_id, carol) = (
        people["alice"],
        people["bob"],
        people["carol"],
    )
    dave_id = people["dave"][0]
    tap = await event_tap(suite)

    await suite.client.post(
        f"/v1/groups/{gid}/members", json={"user_ids": [dave_id]}, headers=alice
    )
    await suite.client.patch(
        f"/v1/groups/{gid}/members/{dave_id}", json={"role": "admin"}, headers=alice
    )
    await suite.client.delete(f"/v1/groups/{gid}/members/{dave_id}", headers=alice)
    await suite.client.post(f"/v1/groups/{gid}/leave", headers=carol)
    assert kinds_and_bodies(await events_of(tap)) == [
        ("members_added", {"actor_id": alice_id, "user_ids": [dave_id]}),
        ("role_changed", {"actor_id": alice_id, "user_ids": [dave_id], "role": "admin"}),
        ("member_removed", {"actor_id": alice_id, "user_ids": [dave_id]}),
        ("member_left", {"actor_id": carol_id, "user_ids": [carol_id]}),
    ]
    assert bob_id  # untouched


async def test_transfer_is_owner_only_and_lets_the_old_owner_leave(suite: Suite) -> None:
    gid, people = await team(suite)
    (alice_id, alice), (bob_id, bob), (carol_id, _) = (
        people["alice"],
        people["bob"],
        people["carol"],
    )
    tap = await event_tap(suite)
    assert_problem(
        await suite.client.post(f"/v1/groups/{gid}/leave", headers=alice), 409, "owner_cannot_leave"
    )
    r = await suite.client.post(
        f"/v1/groups/{gid}/transfer", json={"user_id": carol_id}, headers=bob
    )
    assert_problem(r, 403, "forbidden")
    r = await suite.client.post(
        f"/v1/groups/{gid}/transfer", json={"user_id": people["dave"][0]}, headers=alice
    )
    assert_problem(r, 404, "not_found")

    r = await suite.client.post(
        f"/v1/groups/{gid}/transfer", json={"user_id": bob_id}, headers=alice
    )
    assert r.status_code == 200, r.text
    assert r.json()["owner_id"] == bob_id and r.json()["my_role"] == "admin"
    roles = {uid: m["role"] for uid, m in (await members_of(suite, bob, gid)).items()}
    assert roles[bob_id] == "owner" and roles[alice_id] == "admin"
    r = await suite.client.post(f"/v1/groups/{gid}/leave", headers=alice)
    assert r.status_code == 204, r.text
    assert kinds_and_bodies(await events_of(tap)) == [
        ("owner_transferred", {"actor_id": alice_id, "user_ids": [bob_id]}),
        ("member_left", {"actor_id": alice_id, "user_ids": [alice_id]}),
    ]


async def test_invite_links_join_until_expired_revoked_or_used_up(suite: Suite) -> None:
    gid, people = await team(suite)
    (_, alice), (_, bob), (_, carol), (dave_id, dave) = (people[n] for n in people)
    eve_id, eve = await suite.user("eve")
    _, frank = await suite.user("frank")
    tap = await event_tap(suite)

    r = await suite.client.post(f"/v1/groups/{gid}/invites", json={}, headers=carol)
    assert_problem(r, 403, "forbidden")
    r = await suite.client.post(f"/v1/groups/{gid}/invites", json={"max_uses": 1}, headers=bob)
    assert r.status_code == 201, r.text
    link = r.json()
    assert link["token"] and link["max_uses"] == 1 and not link["revoked"]

    r = await suite.client.post("/v1/groups/join", json={"token": link["token"]}, headers=dave)
    assert r.json() == {"conversation_id": gid, "name": "team", "status": "joined"}
    (joined,) = await events_of(tap)
    assert joined.sender_id == dave_id and joined.content_type == events.GROUP_MEMBER_JOINED
    assert json.loads(joined.body) == {"actor_id": dave_id, "user_ids": [dave_id]}
    r = await suite.client.post("/v1/groups/join", json={"token": link["token"]}, headers=dave)
    assert r.json()["status"] == "already_member"
    r = await suite.client.post("/v1/groups/join", json={"token": link["token"]}, headers=eve)
    assert_problem(r, 410, "invite_unusable")  # used up

    r = await suite.client.post(f"/v1/groups/{gid}/invites", json={}, headers=alice)
    second = r.json()
    r = await suite.client.delete(f"/v1/groups/{gid}/invites/{second['link_id']}", headers=bob)
    assert r.status_code == 200 and r.json()["revoked"] and r.json()["token"] is None
    r = await suite.client.post("/v1/groups/join", json={"token": second["token"]}, headers=eve)
    assert_problem(r, 404, "invite_not_found")

    third = (await suite.client.post(f"/v1/groups/{gid}/invites", json={}, headers=alice)).json()
    expire(suite, third["link_id"])
    r = await suite.client.post("/v1/groups/join", json={"token": third["token"]}, headers=eve)
    assert_problem(r, 410, "invite_unusable")
    for token in ("nope", "x" * 129, "../../etc"):
        r = await suite.client.post("/v1/groups/join", json={"token": token}, headers=frank)
        assert r.status_code in (404, 422), r.text

    listed = (await suite.client.get(f"/v1/groups/{gid}/invites", headers=bob)).json()["invites"]
    assert [i["link_id"] for i in listed] == [link["link_id"], second["link_id"], third["link_id"]]
    assert all(i["token"] is None for i in listed)
    assert_problem(
        await suite.client.get(f"/v1/groups/{gid}/invites", headers=carol), 403, "forbidden"
    )
    assert eve_id not in await members_of(suite, alice, gid)


def expire(suite: Suite, link_id: str) -> None:
    """Moves a link's expiry into the past, as time passing would."""
    engine = create_engine(suite.settings.resolved_database_url())
    try:
        with engine.begin() as conn:
            conn.execute(
                update(GroupInviteRow).where(GroupInviteRow.link_id == link_id).values(expires_at=1)
            )
    finally:
        engine.dispose()


async def test_a_link_with_approval_files_requests_that_managers_decide(suite: Suite) -> None:
    gid, people = await team(suite)
    (_, alice), (bob_id, bob), (_, carol), (dave_id, dave) = (people[n] for n in people)
    eve_id, eve = await suite.user("eve")
    link = (
        await suite.client.post(
            f"/v1/groups/{gid}/invites", json={"approval_required": True}, headers=alice
        )
    ).json()
    tap = await event_tap(suite)

    for headers in (dave, eve, dave):
        r = await suite.client.post(
            "/v1/groups/join", json={"token": link["token"]}, headers=headers
        )
        assert r.json()["status"] == "pending"
    assert await events_of(tap) == []  # asking is not joining
    assert_problem(await suite.client.get(f"/v1/groups/{gid}", headers=dave), 403, "forbidden")
    pending = (await suite.client.get(f"/v1/groups/{gid}/join-requests", headers=bob)).json()
    assert [p["user_id"] for p in pending["requests"]] == [dave_id, eve_id]
    r = await suite.client.post(f"/v1/groups/{gid}/join-requests/{dave_id}/approve", headers=carol)
    assert_problem(r, 403, "forbidden")

    r = await suite.client.post(f"/v1/groups/{gid}/join-requests/{dave_id}/approve", headers=bob)
    assert r.json() == {"joined": True}
    r = await suite.client.post(f"/v1/groups/{gid}/join-requests/{eve_id}/reject", headers=bob)
    assert r.json() == {"joined": False}
    r = await suite.client.post(f"/v1/groups/{gid}/join-requests/{eve_id}/approve", headers=bob)
    assert_problem(r, 404, "not_found")
    members = await members_of(suite, alice, gid)
    assert dave_id in members and eve_id not in members
    (joined,) = await events_of(tap)
    assert joined.sender_id == bob_id
    assert json.loads(joined.body) == {
        "actor_id": bob_id,
        "user_ids": [dave_id],
        "approved_by": bob_id,
    }


async def test_dissolve_is_owner_only_and_freezes_the_group(suite: Suite) -> None:
    gid, people = await team(suite)
    (alice_id, alice), (_, bob), (carol_id, carol), (dave_id, dave) = (people[n] for n in people)
    link = (await suite.client.post(f"/v1/groups/{gid}/invites", json={}, headers=alice)).json()
    events_tap = await event_tap(suite)
    membership = await Tap.at_end(suite, suite.settings.topic_membership)

    assert_problem(
        await suite.client.post(f"/v1/groups/{gid}/dissolve", headers=bob), 403, "forbidden"
    )
    r = await suite.client.post(f"/v1/groups/{gid}/dissolve", headers=alice)
    assert r.status_code == 200 and r.json()["dissolved"] and r.json()["dissolved_at"] > 0
    (dissolved,) = await events_of(events_tap)
    assert dissolved.content_type == events.GROUP_DISSOLVED and dissolved.sender_id == alice_id
    # Connectors are told to forget the group's send permissions (and then learn it
    # is read-only when they ask again).
    [(key, event)] = await membership.take(bus_pb2.MembershipEvent.FromString)
    assert key == gid and not event.added and not event.removed
    r = await suite.client.post(f"/v1/groups/{gid}/dissolve", headers=alice)
    assert r.status_code == 200 and await events_of(events_tap) == []  # once

    # Members still see it, marked dissolved; nothing changes any more.
    assert (await suite.client.get(f"/v1/groups/{gid}", headers=carol)).json()["dissolved"]
    listed = (await suite.client.get("/v1/conversations", headers=carol)).json()["conversations"]
    assert next(c for c in listed if c["conversation_id"] == gid)["dissolved"] is True
    refused = [
        suite.client.patch(f"/v1/groups/{gid}", json={"name": "x"}, headers=alice),
        suite.client.post(f"/v1/groups/{gid}/members", json={"user_ids": [dave_id]}, headers=alice),
        suite.client.delete(f"/v1/groups/{gid}/members/{carol_id}", headers=alice),
        suite.client.post(f"/v1/groups/{gid}/transfer", json={"user_id": carol_id}, headers=alice),
        suite.client.post(f"/v1/groups/{gid}/invites", json={}, headers=alice),
    ]
    for call in refused:
        r = await call
        assert r.status_code == 409, r.text
    r = await suite.client.post("/v1/groups/join", json={"token": link["token"]}, headers=dave)
    assert_problem(r, 404, "invite_not_found")  # its links went with it
    # Leaving still works, silently.
    assert (await suite.client.post(f"/v1/groups/{gid}/leave", headers=carol)).status_code == 204
    assert await events_of(events_tap) == []


async def test_an_event_retried_after_a_bus_failure_keeps_its_client_msg_id(
    suite: Suite,
) -> None:
    gid, people = await team(suite)
    alice = people["alice"][1]
    bus = suite.backends.bus
    real_publish, failures = bus.publish, [1]

    async def flaky(topic: str, key: str, value: bytes) -> None:
        if topic == suite.settings.topic_messages and failures:
            failures.pop()
            raise ConnectionError("broker away")
        await real_publish(topic, key, value)

    tap = await event_tap(suite)
    bus.publish = flaky  # type: ignore[method-assign]
    try:
        r = await suite.client.patch(f"/v1/groups/{gid}", json={"name": "crew"}, headers=alice)
    finally:
        bus.publish = real_publish  # type: ignore[method-assign]
    assert r.status_code == 200, r.text
    (renamed,) = await events_of(tap)
    assert renamed.client_msg_id.startswith(f"{SERVER_KEY_PREFIX}{gid}:ev:")


async def test_a_member_cannot_take_the_key_of_the_next_event_first(suite: Suite) -> None:
    """Had bob's message taken it, the event of his next change would pass for a retry
    of that message (its msg_id) and never be stored: a silent removal."""
    tap = await event_tap(suite)
    gid, people = await team(suite)
    (bob_id, bob), (carol_id, _) = people["bob"], people["carol"]
    *_, role_changed = await events_of(tap)
    version = int(role_changed.client_msg_id.rsplit(":", 1)[1])

    async def post(client_msg_id: str) -> int:
        r = await suite.client.post(
            f"/v1/conversations/{gid}/messages",
            json={"client_msg_id": client_msg_id, "text": "hi"},
            headers=bob,
        )
        return r.status_code

    assert await post(event_client_msg_id(gid, version + 1)) == 422
    assert await post(f"{gid}:ev:{version + 1}") == 202  # the form events had before
    (plain,) = await events_of(tap)
    r = await suite.client.delete(f"/v1/groups/{gid}/members/{carol_id}", headers=bob)
    assert r.status_code == 204, r.text
    (removed,) = await events_of(tap)
    assert removed.content_type == events.GROUP_MEMBER_REMOVED and removed.sender_id == bob_id
    assert removed.client_msg_id == event_client_msg_id(gid, version + 1)
    assert removed.msg_id != plain.msg_id
