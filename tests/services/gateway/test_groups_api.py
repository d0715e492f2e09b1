"""Groups and read receipts over the gateway's REST API, against real user and group
services, with the bus records they publish read back from the in-memory bus."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from im.ids import direct_conversation_id
from im.ports import BusConsumer
from im.v1 import bus_pb2, group_pb2
from tests.services.gateway.helpers import assert_problem, message

if TYPE_CHECKING:
    from .conftest import Suite

Headers = dict[str, str]
R = TypeVar("R")


class Tap:
    """Reads what the gateway published on one topic since the last ``take``."""

    def __init__(self, consumer: BusConsumer) -> None:
        self.consumer = consumer

    @classmethod
    async def at_end(cls, suite: Suite, topic: str) -> Tap:
        """A tap that skips what the topic already holds."""
        tap = cls(suite.backends.bus.consumer([topic], f"test-tap-{topic}"))
        await tap.take(bytes)
        return tap

    async def take(self, parse: Callable[[bytes], R]) -> list[tuple[str, R]]:
        records = []
        while batch := await self.consumer.poll(1000, 0.05):
            records += batch
        return [(r.key, parse(r.value)) for r in records]


async def create(suite: Suite, headers: Headers, name: str = "team", **body: Any) -> dict:
    r = await suite.client.post("/v1/groups", json={"name": name, **body}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


async def members_of(suite: Suite, headers: Headers, gid: str) -> dict[int, dict]:
    r = await suite.client.get(f"/v1/groups/{gid}/members", headers=headers)
    assert r.status_code == 200, r.text
    return {m["user_id"]: m for m in r.json()["members"]}


async def conversation(suite: Suite, headers: Headers, cid: str) -> dict:
    r = await suite.client.get("/v1/conversations", headers=headers)
    assert r.status_code == 200, r.text
    return next(c for c in r.json()["conversations"] if c["conversation_id"] == cid)


async def grpc_group(suite: Suite, owner_id: int, member_ids: list[int]) -> str:
    """A group made straight on the group service, which (unlike the gateway) takes
    any positive id: big groups without registering thousands of users."""
    response = await suite.groups.CreateGroup(
        group_pb2.CreateGroupRequest(owner_id=owner_id, name="big", member_ids=member_ids)
    )
    return response.conversation.conversation_id


# ------------------------------------------------------------------------ create
async def test_create_group(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    carol_id = await suite.register("carol")
    tap = await Tap.at_end(suite, suite.settings.topic_membership)

    # Duplicates and the caller's own id are ignored; the caller becomes the owner.
    group = await create(suite, alice, member_ids=[bob_id, carol_id, bob_id, alice_id])
    gid = group["conversation_id"]
    assert gid.startswith("g:") and gid[2:].isdigit()
    assert group == {
        "conversation_id": gid,
        "name": "team",
        "owner_id": alice_id,
        "member_count": 3,
        "history_visible": False,
        "created_at": group["created_at"],
        "my_role": "owner",
        "description": "",
        "avatar": "",
        "dissolved": False,
        "dissolved_at": 0,
    }
    assert group["created_at"] > 1_600_000_000_000

    roles = {uid: m["role"] for uid, m in (await members_of(suite, bob, gid)).items()}
    assert roles == {alice_id: "owner", bob_id: "member", carol_id: "member"}
    listed = await conversation(suite, bob, gid)
    assert (listed["kind"], listed["name"], listed["peer_id"]) == ("group", "team", None)

    (key, event), *rest = await tap.take(bus_pb2.MembershipEvent.FromString)
    assert not rest and key == gid
    assert event.conversation_id == gid and event.at_seq == 0
    assert sorted(event.added) == sorted([alice_id, bob_id, carol_id]) and not event.removed

    visible = await create(suite, alice, "open", history_visible=True)
    assert visible["history_visible"] is True and visible["member_count"] == 1


async def test_create_group_rejects_unknown_users_naming_them(suite: Suite) -> None:
    _, alice = await suite.user("alice")
    bob_id = await suite.register("bob")
    r = await suite.client.post(
        "/v1/groups", json={"name": "team", "member_ids": [bob_id, 99991, 99992]}, headers=alice
    )
    body = assert_problem(r, 422, "unknown_users")
    assert body["user_ids"] == [99991, 99992]
    assert "99991" in body["detail"] and "99992" in body["detail"]
    # Nothing was created.
    assert (await suite.client.get("/v1/conversations", headers=alice)).json() == {
        "conversations": []
    }

    # More than one user-service lookup (1000 ids each): every unknown id is reported,
    # the detail names the first few only.
    unknown = list(range(500_000, 502_500))
    r = await suite.client.post(
        "/v1/groups", json={"name": "big", "member_ids": [bob_id, *unknown]}, headers=alice
    )
    body = assert_problem(r, 422, "unknown_users")
    assert body["user_ids"] == unknown
    assert body["detail"].endswith(f"and {len(unknown) - 20} more")


async def test_create_group_validation(suite: Suite) -> None:
    _, alice = await suite.user("alice")
    bad_bodies: list[dict[str, Any]] = [
        {"name": "team", "member_ids": list(range(1, 5002))},  # over 5000 per request
        {"name": "", "member_ids": []},
        {"name": "x" * 256},
        {"member_ids": []},
        {"name": "team", "member_ids": [0]},
        {"name": "team", "member_ids": [-3]},
        {"name": "team", "member_ids": [2**63]},
        {"name": "team", "member_ids": ["abc"]},
    ]
    for body in bad_bodies:
        r = await suite.client.post("/v1/groups", json=body, headers=alice)
        assert_problem(r, 422, "invalid_request")
    # A blank name passes the length check here and is refused by the group service.
    r = await suite.client.post("/v1/groups", json={"name": "   "}, headers=alice)
    assert_problem(r, 422, "invalid_request")
    assert_problem(await suite.client.post("/v1/groups", json={"name": "t"}), 401, "unauthorized")


@pytest.mark.parametrize("settings_overrides", [{"max_group_size": 3}])
async def test_group_size_limit(suite: Suite) -> None:
    _, alice = await suite.user("alice")
    others = [await suite.register(name) for name in ("bob", "carol", "dave")]
    r = await suite.client.post(
        "/v1/groups", json={"name": "too big", "member_ids": others}, headers=alice
    )
    assert_problem(r, 409, "group_full")

    gid = (await create(suite, alice, member_ids=others[:2]))["conversation_id"]
    r = await suite.client.post(
        f"/v1/groups/{gid}/members", json={"user_ids": [others[2]]}, headers=alice
    )
    assert_problem(r, 409, "group_full")
    # Adding someone already in it does not count against the limit.
    r = await suite.client.post(
        f"/v1/groups/{gid}/members", json={"user_ids": [others[0]]}, headers=alice
    )
    assert r.status_code == 200 and r.json() == {"added": []}


# --------------------------------------------------------------------------- get
async def test_get_group(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    _, carol = await suite.user("carol")
    gid = (await create(suite, alice, member_ids=[bob_id]))["conversation_id"]
    digits = gid[2:]

    for path in [f"/v1/groups/{gid}", f"/v1/groups/g%3A{digits}", f"/v1/groups/{digits}"]:
        r = await suite.client.get(path, headers=bob)
        assert r.status_code == 200, (path, r.text)
        assert r.json()["my_role"] == "member" and r.json()["conversation_id"] == gid
    assert (await suite.client.get(f"/v1/groups/{gid}", headers=alice)).json()["my_role"] == (
        "owner"
    )

    assert_problem(await suite.client.get(f"/v1/groups/{gid}", headers=carol), 403, "forbidden")
    for unknown in ["g:123456789", "123456789", direct_conversation_id(alice_id, bob_id), "x"]:
        r = await suite.client.get(f"/v1/groups/{unknown}", headers=bob)
        assert_problem(r, 404, "not_found")
    assert_problem(await suite.client.get(f"/v1/groups/{gid}"), 401, "unauthorized")


# --------------------------------------------------------------------------- add
async def test_add_members_permissions(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    carol_id, carol = await suite.user("carol")
    dave_id = await suite.register("dave")
    gid = (await create(suite, alice, member_ids=[bob_id]))["conversation_id"]
    url = f"/v1/groups/{gid}/members"

    for headers in (bob, carol):  # a plain member, a non-member
        r = await suite.client.post(url, json={"user_ids": [dave_id]}, headers=headers)
        assert_problem(r, 403, "forbidden")
    r = await suite.client.post(url, json={"user_ids": [carol_id, 77777]}, headers=alice)
    assert assert_problem(r, 422, "unknown_users")["user_ids"] == [77777]
    for body in [{"user_ids": []}, {"user_ids": list(range(1, 5002))}, {}]:
        assert_problem(
            await suite.client.post(url, json=body, headers=alice), 422, "invalid_request"
        )
    r = await suite.client.post(
        "/v1/groups/g:987654321/members", json={"user_ids": [dave_id]}, headers=alice
    )
    assert_problem(r, 404, "not_found")

    r = await suite.client.post(url, json={"user_ids": [carol_id, bob_id]}, headers=alice)
    assert r.status_code == 200 and r.json() == {"added": [carol_id]}

    # An admin may add members too.
    r = await suite.client.patch(f"{url}/{bob_id}", json={"role": "admin"}, headers=alice)
    assert r.status_code == 200, r.text
    r = await suite.client.post(url, json={"user_ids": [dave_id]}, headers=bob)
    assert r.status_code == 200 and r.json() == {"added": [dave_id]}
    group = (await suite.client.get(f"/v1/groups/{gid}", headers=carol)).json()
    assert group["member_count"] == 4 and group["owner_id"] == alice_id


async def test_new_member_starts_after_joining(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    dave_id, dave = await suite.user("dave")
    gid = (await create(suite, alice))["conversation_id"]
    await suite.store.insert_many([message(gid, s, alice_id) for s in (1, 2, 3)])
    tap = await Tap.at_end(suite, suite.settings.topic_membership)

    r = await suite.client.post(
        f"/v1/groups/{gid}/members", json={"user_ids": [dave_id]}, headers=alice
    )
    assert r.json() == {"added": [dave_id]}
    [(_, event)] = await tap.take(bus_pb2.MembershipEvent.FromString)
    assert (list(event.added), event.at_seq) == ([dave_id], 3)

    mine = (await members_of(suite, dave, gid))[dave_id]
    assert (mine["role"], mine["joined_seq"], mine["read_seq"]) == ("member", 3, 3)
    history = (await suite.client.get(f"/v1/conversations/{gid}/messages", headers=dave)).json()
    assert history["messages"] == []
    listed = await conversation(suite, dave, gid)
    assert (listed["last_seq"], listed["unread"]) == (3, 0)

    await suite.store.insert_many([message(gid, 4, alice_id)])
    history = (await suite.client.get(f"/v1/conversations/{gid}/messages", headers=dave)).json()
    assert [m["seq"] for m in history["messages"]] == [4]
    assert (await conversation(suite, dave, gid))["unread"] == 1


async def test_history_visible_group_shows_new_members_everything(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    dave_id, dave = await suite.user("dave")
    gid = (await create(suite, alice, history_visible=True))["conversation_id"]
    await suite.store.insert_many([message(gid, s, alice_id) for s in (1, 2, 3)])
    tap = await Tap.at_end(suite, suite.settings.topic_membership)

    r = await suite.client.post(
        f"/v1/groups/{gid}/members", json={"user_ids": [dave_id]}, headers=alice
    )
    assert r.status_code == 200
    [(_, event)] = await tap.take(bus_pb2.MembershipEvent.FromString)
    assert event.at_seq == 0
    assert (await members_of(suite, dave, gid))[dave_id]["joined_seq"] == 0
    history = (await suite.client.get(f"/v1/conversations/{gid}/messages", headers=dave)).json()
    assert [m["seq"] for m in history["messages"]] == [1, 2, 3]
    assert (await conversation(suite, dave, gid))["unread"] == 3


# ---------------------------------------------------------------- remove, leave
async def test_remove_and_leave(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    carol_id, carol = await suite.user("carol")
    dave_id, dave = await suite.user("dave")
    erin_id, erin = await suite.user("erin")
    _, mallory = await suite.user("mallory")
    gid = (await create(suite, alice, member_ids=[bob_id, carol_id, dave_id, erin_id]))[
        "conversation_id"
    ]
    url = f"/v1/groups/{gid}/members"
    tap = await Tap.at_end(suite, suite.settings.topic_membership)

    # A plain member or an outsider cannot remove anyone.
    for headers in (bob, mallory):
        assert_problem(
            await suite.client.delete(f"{url}/{carol_id}", headers=headers), 403, "forbidden"
        )
    # The owner removes a member; the removed one is out.
    r = await suite.client.delete(f"{url}/{bob_id}", headers=alice)
    assert r.status_code == 204 and r.content == b""
    assert_problem(await suite.client.get(f"/v1/groups/{gid}", headers=bob), 403, "forbidden")
    assert_problem(await suite.client.delete(f"{url}/{bob_id}", headers=alice), 404, "not_found")
    assert_problem(
        await suite.client.delete(f"/v1/groups/g:987654321/members/{carol_id}", headers=alice),
        404,
        "not_found",
    )
    # Nobody removes the owner, and the owner cannot leave.
    body = assert_problem(
        await suite.client.delete(f"{url}/{alice_id}", headers=alice), 409, "owner_cannot_leave"
    )
    assert "owner" in body["detail"]
    r = await suite.client.post(f"/v1/groups/{gid}/leave", headers=alice)
    assert_problem(r, 409, "owner_cannot_leave")

    # Admins remove members but not other admins; only the owner removes an admin.
    for uid in (carol_id, dave_id):
        r = await suite.client.patch(f"{url}/{uid}", json={"role": "admin"}, headers=alice)
        assert r.status_code == 200
    assert_problem(await suite.client.delete(f"{url}/{dave_id}", headers=carol), 403, "forbidden")
    assert (await suite.client.delete(f"{url}/{erin_id}", headers=carol)).status_code == 204
    assert (await suite.client.delete(f"{url}/{dave_id}", headers=alice)).status_code == 204

    # Leaving: by the leave endpoint, or by removing oneself.
    assert (await suite.client.post(f"/v1/groups/{gid}/leave", headers=carol)).status_code == 204
    r = await suite.client.post(f"/v1/groups/{gid}/leave", headers=carol)
    assert_problem(r, 403, "forbidden")
    r = await suite.client.post("/v1/groups/g:987654321/leave", headers=carol)
    assert_problem(r, 404, "not_found")
    assert_problem(
        await suite.client.post(f"/v1/groups/{gid}/leave", headers=dave), 403, "forbidden"
    )
    assert_problem(
        await suite.client.post(f"/v1/groups/{gid}/leave", headers=erin), 403, "forbidden"
    )
    group = (await suite.client.get(f"/v1/groups/{gid}", headers=alice)).json()
    assert group["member_count"] == 1
    assert list(await members_of(suite, alice, gid)) == [alice_id]

    events = await tap.take(bus_pb2.MembershipEvent.FromString)
    assert all(key == gid for key, _ in events)
    assert [(list(e.added), list(e.removed)) for _, e in events] == [
        ([], [bob_id]),
        ([], [erin_id]),
        ([], [dave_id]),
        ([], [carol_id]),
    ]


async def test_removing_oneself_is_leaving(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    gid = (await create(suite, alice, member_ids=[bob_id]))["conversation_id"]
    r = await suite.client.delete(f"/v1/groups/{gid}/members/{bob_id}", headers=bob)
    assert r.status_code == 204
    assert list(await members_of(suite, alice, gid)) == [alice_id]


# ----------------------------------------------------------------------- members
async def test_members_paging(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    _, mallory = await suite.user("mallory")
    fake = list(range(10_001, 10_251))  # the group service does not check users
    gid = await grpc_group(suite, alice_id, fake)
    url = f"/v1/groups/{gid}/members"

    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        body = (await suite.client.get(url, params=params, headers=alice)).json()
        assert len(body["members"]) <= 100  # bounded pages
        seen += [m["user_id"] for m in body["members"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted([alice_id, *fake])

    default = (await suite.client.get(url, headers=alice)).json()
    assert len(default["members"]) == 100 and default["next_cursor"]
    first = default["members"][0]
    assert set(first) == {"user_id", "role", "joined_seq", "read_seq", "joined_at"}

    for params in [{"limit": 0}, {"limit": 1001}, {"cursor": "nope"}]:
        r = await suite.client.get(url, params=params, headers=alice)
        assert_problem(r, 422, "invalid_request")
    assert_problem(await suite.client.get(url, headers=mallory), 403, "forbidden")
    r = await suite.client.get("/v1/groups/g:987654321/members", headers=alice)
    assert_problem(r, 404, "not_found")


# -------------------------------------------------------------------------- roles
async def test_set_role(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    carol_id, carol = await suite.user("carol")
    gid = (await create(suite, alice, member_ids=[bob_id, carol_id]))["conversation_id"]
    url = f"/v1/groups/{gid}/members"

    r = await suite.client.patch(f"{url}/{bob_id}", json={"role": "admin"}, headers=alice)
    assert r.status_code == 200, r.text
    member = r.json()
    assert (member["user_id"], member["role"], member["joined_seq"]) == (bob_id, "admin", 0)
    assert (await suite.client.get(f"/v1/groups/{gid}", headers=bob)).json()["my_role"] == "admin"

    # Only the owner changes roles; the owner's own role is fixed.
    r = await suite.client.patch(f"{url}/{carol_id}", json={"role": "admin"}, headers=bob)
    assert_problem(r, 403, "forbidden")
    r = await suite.client.patch(f"{url}/{alice_id}", json={"role": "member"}, headers=alice)
    assert_problem(r, 409, "owner_role_fixed")
    for body in [{"role": "owner"}, {"role": "king"}, {}]:
        r = await suite.client.patch(f"{url}/{carol_id}", json=body, headers=alice)
        assert_problem(r, 422, "invalid_request")
    r = await suite.client.patch(f"{url}/424242", json={"role": "admin"}, headers=alice)
    assert_problem(r, 404, "not_found")

    r = await suite.client.patch(f"{url}/{bob_id}", json={"role": "member"}, headers=alice)
    assert r.json()["role"] == "member"
    assert (await members_of(suite, carol, gid))[bob_id]["role"] == "member"


# -------------------------------------------------------------- cursor reports
async def test_read_and_ack_publish_cursor_reports(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    gid = (await create(suite, alice, member_ids=[bob_id]))["conversation_id"]
    await suite.store.insert_many([message(gid, s, alice_id) for s in (1, 2, 3)])
    tap = await Tap.at_end(suite, suite.settings.topic_cursors)

    async def post(verb: str, seq: int) -> None:
        r = await suite.client.post(
            f"/v1/conversations/{gid}/{verb}", json={"seq": seq}, headers=bob
        )
        assert r.status_code == 204, r.text

    await post("read", 2)
    await post("ack", 3)
    await post("read", 50)  # capped at the last stored message
    await post("ack", 0)  # nothing to move: nothing published
    reports = await tap.take(bus_pb2.CursorReport.FromString)
    assert all(key == gid for key, _ in reports)
    assert [(r.conversation_id, r.user_id, r.device_id) for _, r in reports] == [
        (gid, bob_id, "phone")
    ] * 3
    assert [(r.delivered_seq, r.read_seq) for _, r in reports] == [(2, 2), (3, 0), (3, 3)]
    # The cursor itself was written directly too.
    mine = (await members_of(suite, bob, gid))[bob_id]
    assert mine["read_seq"] == 3

    # Refused requests publish nothing.
    _, carol = await suite.user("carol")
    r = await suite.client.post(f"/v1/conversations/{gid}/read", json={"seq": 1}, headers=carol)
    assert_problem(r, 403, "forbidden")
    assert await tap.take(bus_pb2.CursorReport.FromString) == []


async def test_publishing_is_best_effort(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    gid = (await create(suite, alice))["conversation_id"]
    await suite.store.insert_many([message(gid, 1, alice_id)])

    async def broken(*_args: object) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(suite.backends.bus, "publish", broken)
    # The change is committed, so the answer is a success all the same.
    r = await suite.client.post(
        f"/v1/groups/{gid}/members", json={"user_ids": [bob_id]}, headers=alice
    )
    assert r.status_code == 200 and r.json() == {"added": [bob_id]}
    r = await suite.client.post(f"/v1/conversations/{gid}/read", json={"seq": 1}, headers=alice)
    assert r.status_code == 204
    assert (await suite.client.post(f"/v1/groups/{gid}/leave", headers=bob)).status_code == 204


# ----------------------------------------------------------------------- receipts
async def test_receipts(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    carol_id, carol = await suite.user("carol")
    dave_id, dave = await suite.user("dave")
    _, mallory = await suite.user("mallory")
    gid = (await create(suite, alice, member_ids=[bob_id, carol_id]))["conversation_id"]
    await suite.store.insert_many([message(gid, 1, alice_id), message(gid, 2, bob_id)])
    # dave joins after message 2: it was never his, so it is not counted for him.
    r = await suite.client.post(
        f"/v1/groups/{gid}/members", json={"user_ids": [dave_id]}, headers=alice
    )
    assert r.status_code == 200
    await suite.store.insert_many([message(gid, 3, alice_id)])
    url = f"/v1/conversations/{gid}/receipts"

    async def receipts(headers: Headers, **params: Any) -> dict:
        r = await suite.client.get(url, params=params, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()

    assert await receipts(alice, seq=1) == {
        "conversation_id": gid,
        "seq": 1,
        "sender_id": alice_id,
        "read_count": 0,
        "unread_count": 2,
        "read_by": {"user_ids": [], "next_cursor": None},
        "unread": {"user_ids": [bob_id, carol_id], "next_cursor": None},
    }
    for who in (bob, carol):
        r = await suite.client.post(f"/v1/conversations/{gid}/read", json={"seq": 1}, headers=who)
        assert r.status_code == 204
    first = await receipts(bob, seq=1)
    assert (first["read_count"], first["unread_count"]) == (2, 0)
    assert first["read_by"]["user_ids"] == [bob_id, carol_id] and first["unread"]["user_ids"] == []

    # Message 2 is bob's: he is left out, and the read cursors say who has read it.
    second = await receipts(carol, seq=2)
    assert (second["sender_id"], second["read_count"], second["unread_count"]) == (bob_id, 0, 2)
    await suite.client.post(f"/v1/conversations/{gid}/read", json={"seq": 3}, headers=alice)
    second = await receipts(carol, seq=2, list="read")
    assert (second["read_count"], second["unread_count"]) == (1, 1)
    assert second["read_by"] == {"user_ids": [alice_id], "next_cursor": None}
    assert second["unread"] is None
    second = await receipts(carol, seq=2, list="unread")
    assert second["read_by"] is None and second["unread"]["user_ids"] == [carol_id]

    # Message 3 counts dave, who had joined by then.
    third = await receipts(dave, seq=3)
    assert third["unread"]["user_ids"] == [bob_id, carol_id, dave_id]
    # Messages from before dave joined are not his to ask about.
    assert_problem(await suite.client.get(url, params={"seq": 1}, headers=dave), 404, "not_found")
    assert_problem(await suite.client.get(url, params={"seq": 9}, headers=alice), 404, "not_found")
    assert_problem(
        await suite.client.get(url, params={"seq": 1}, headers=mallory), 403, "forbidden"
    )
    for params in [
        {},
        {"seq": 0},
        {"seq": "x"},
        {"seq": 1, "limit": 0},
        {"seq": 1, "limit": 1001},
        {"seq": 1, "list": "everyone"},
        {"seq": 1, "cursor": "nope"},
    ]:
        r = await suite.client.get(url, params=params, headers=alice)
        assert_problem(r, 422, "invalid_request")
    r = await suite.client.get("/v1/conversations/bogus/receipts?seq=1", headers=alice)
    assert_problem(r, 404, "not_found")


async def test_receipts_of_a_direct_conversation(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    r = await suite.client.post("/v1/conversations/direct", json={"peer_id": bob_id}, headers=alice)
    cid = r.json()["conversation_id"]
    await suite.store.insert_many([message(cid, 1, alice_id)])
    url = f"/v1/conversations/{cid}/receipts"
    before = (await suite.client.get(url, params={"seq": 1}, headers=alice)).json()
    assert (before["read_count"], before["unread_count"]) == (0, 1)
    await suite.client.post(f"/v1/conversations/{cid}/read", json={"seq": 1}, headers=bob)
    after = (await suite.client.get(url, params={"seq": 1}, headers=alice)).json()
    assert after["read_by"]["user_ids"] == [bob_id] and after["unread_count"] == 0


async def test_receipts_paging_is_bounded(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    fake = list(range(20_001, 20_301))  # 300 members besides alice
    gid = await grpc_group(suite, alice_id, fake)
    await suite.store.insert_many([message(gid, 1, alice_id)])
    readers = fake[::3]  # 100 have read it
    await suite.groups.UpdateCursors(
        group_pb2.UpdateCursorsRequest(
            updates=[
                group_pb2.CursorUpdate(conversation_id=gid, user_id=uid, read_seq=1)
                for uid in readers
            ]
        )
    )
    url = f"/v1/conversations/{gid}/receipts"

    async def page_through(which: str) -> tuple[list[int], int]:
        ids: list[int] = []
        cursor = ""
        pages = 0
        while True:
            params: dict[str, Any] = {"seq": 1, "list": which, "limit": 40}
            if cursor:
                params["cursor"] = cursor
            body = (await suite.client.get(url, params=params, headers=alice)).json()
            assert (body["read_count"], body["unread_count"]) == (100, 200)
            page = body["read_by" if which == "read" else "unread"]
            assert len(page["user_ids"]) <= 40
            ids += page["user_ids"]
            pages += 1
            if page["next_cursor"] is None:
                return ids, pages
            cursor = page["next_cursor"]

    read_ids, read_pages = await page_through("read")
    unread_ids, unread_pages = await page_through("unread")
    assert read_ids == readers and read_pages == 3
    assert unread_ids == [uid for uid in fake if uid not in set(readers)] and unread_pages == 5

    # "both": one page of each, each with its own next cursor.
    both = (await suite.client.get(url, params={"seq": 1, "limit": 10}, headers=alice)).json()
    assert both["read_by"]["user_ids"] == readers[:10]
    assert both["read_by"]["next_cursor"] == str(readers[9])
    assert len(both["unread"]["user_ids"]) == 10


# ----------------------------------------------------------------------- openapi
async def test_openapi_lists_group_and_receipt_routes(suite: Suite) -> None:
    spec = (await suite.client.get("/openapi.json")).json()
    for path, method in [
        ("/v1/groups", "post"),
        ("/v1/groups/{group_id}", "get"),
        ("/v1/groups/{group_id}/members", "post"),
        ("/v1/groups/{group_id}/members", "get"),
        ("/v1/groups/{group_id}/members/{user_id}", "patch"),
        ("/v1/groups/{group_id}/members/{user_id}", "delete"),
        ("/v1/groups/{group_id}/leave", "post"),
        ("/v1/conversations/{conversation_id}/receipts", "get"),
    ]:
        assert method in spec["paths"][path], (path, method)
    schemas = spec["components"]["schemas"]
    assert schemas["CreateGroupRequest"]["properties"]["history_visible"]["description"]
    assert schemas["ReceiptsOut"]["properties"]["read_count"]["description"]
