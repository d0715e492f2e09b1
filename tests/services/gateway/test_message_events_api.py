"""Recall and edit over the gateway's REST API: who may, within which window (a fake
clock, no sleeps), the errors, idempotent retries, and the events it publishes (read
back from the in-memory bus; no router runs here, so targets are stored directly)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest

from im import events
from im.clock import FakeClock
from im.ids import direct_conversation_id
from im.sending import SERVER_KEY_PREFIX, idempotency_key
from im.v1 import bus_pb2, wire_pb2
from services.gateway.message_events import edit_key, recall_key
from tests.services.gateway.helpers import assert_problem, message
from tests.services.gateway.test_groups_api import Tap

if TYPE_CHECKING:
    from .conftest import Suite

Headers = dict[str, str]


@pytest.fixture
def clock(suite: Suite) -> FakeClock:
    fake = FakeClock()
    suite.gateway.gateway.message_events.clock = fake
    return fake


async def stored(suite: Suite, clock: FakeClock, conv: str, seq: int, sender: int, **kw):  # type: ignore[no-untyped-def]
    m = message(conv, seq, sender, **kw)
    m.server_ts = clock.wall_ms()
    await suite.store.insert_many([m])
    return m


async def published(suite: Suite, tap: Tap) -> list[wire_pb2.Message]:
    return [m.message for _, m in await tap.take(bus_pb2.InboundMessage.FromString)]


def recall_url(conv: str, m: wire_pb2.Message | int) -> str:
    msg_id = m if isinstance(m, int) else m.msg_id
    return f"/v1/conversations/{conv}/messages/{msg_id}/recall"


def edit_url(conv: str, m: wire_pb2.Message) -> str:
    return f"/v1/conversations/{conv}/messages/{m.msg_id}"


async def pair(suite: Suite) -> tuple[int, Headers, int, Headers, str]:
    alice, ha = await suite.user("alice")
    bob, hb = await suite.user("bob")
    r = await suite.client.post("/v1/conversations/direct", json={"peer_id": bob}, headers=ha)
    assert r.status_code == 200, r.text
    return alice, ha, bob, hb, direct_conversation_id(alice, bob)


async def test_the_sender_recalls_within_the_window_and_a_retry_is_the_same_event(
    suite: Suite, clock: FakeClock
) -> None:
    alice, ha, _bob, hb, conv = await pair(suite)
    tap = await Tap.at_end(suite, suite.settings.topic_messages)
    m = await stored(suite, clock, conv, 1, alice)
    clock.advance(suite.settings.recall_window_seconds - 1)
    r = await suite.client.post(recall_url(conv, m), headers=ha)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["refers_to"] == str(m.msg_id) and body["content_type"] == events.RECALL
    (event,) = await published(suite, tap)
    assert str(event.msg_id) == body["msg_id"] and event.refers_to == m.msg_id
    assert event.content_type == events.RECALL and event.sender_id == alice
    assert event.body == b"" and event.client_msg_id == recall_key(m.msg_id)
    assert event.client_msg_id.startswith(SERVER_KEY_PREFIX)
    # The router applied it and the window closed: a retry is still the same event.
    event.seq = 2
    await suite.store.insert_many([event])
    await suite.store.apply_events([event])
    clock.advance(3600)
    again = await suite.client.post(recall_url(conv, m), headers=ha)
    assert again.status_code == 202 and again.json()["msg_id"] == body["msg_id"]
    # History shows the message recalled, its body gone, and the event after it.
    page = (await suite.client.get(f"/v1/conversations/{conv}/messages", headers=hb)).json()
    first, second = page["messages"]
    assert first["recalled"] is True and first["body_b64"] == "" and first["text"] == ""
    assert second["refers_to"] == str(m.msg_id) and second["content_type"] == events.RECALL


async def test_recall_refusals(suite: Suite, clock: FakeClock) -> None:
    alice, ha, _bob, hb, conv = await pair(suite)
    _, hc = await suite.user("carol")
    tap = await Tap.at_end(suite, suite.settings.topic_messages)
    m = await stored(suite, clock, conv, 1, alice)
    assert_problem(await suite.client.post(recall_url(conv, m), headers=hb), 403, "forbidden")
    assert_problem(await suite.client.post(recall_url(conv, m), headers=hc), 403, "forbidden")
    r = await suite.client.post(recall_url(conv, m.msg_id + 1), headers=ha)
    assert_problem(r, 404, "not_found")
    r = await suite.client.post(f"/v1/conversations/{conv}/messages/12x/recall", headers=ha)
    assert_problem(r, 422, "invalid_request")
    r = await suite.client.post(recall_url(conv, 0), headers=ha)
    assert_problem(r, 422, "invalid_request")
    # A message of another conversation answers like a missing one.
    elsewhere = await stored(suite, clock, "d:1:999", 1, alice)
    assert_problem(
        await suite.client.post(recall_url(conv, elsewhere), headers=ha), 404, "not_found"
    )
    clock.advance(suite.settings.recall_window_seconds + 1)
    assert_problem(await suite.client.post(recall_url(conv, m), headers=ha), 409, "window_passed")
    # Recalled already (by whoever): 409; an event itself: 422.
    m2 = await stored(suite, clock, conv, 2, alice)
    m2.recalled = True
    await suite.store.insert_many([m3 := message(conv, 3, alice)])
    recalled = wire_pb2.Message(
        msg_id=m3.msg_id + 1, conversation_id=conv, seq=4, sender_id=alice,
        content_type=events.RECALL, refers_to=m2.msg_id, server_ts=clock.wall_ms(),
    )  # fmt: skip
    await suite.store.insert_many([recalled])
    await suite.store.apply_events([recalled])
    r = await suite.client.post(recall_url(conv, m2), headers=ha)
    assert_problem(r, 409, "already_recalled")
    r = await suite.client.post(recall_url(conv, recalled), headers=ha)
    assert_problem(r, 422, "invalid_request")
    assert await published(suite, tap) == []  # nothing refused went out
    # A refused recall left no key behind: allowed later (here: never), nothing stuck.
    assert await suite.kv.claim(idempotency_key(alice, recall_key(m.msg_id)), b"x", 1) is None


async def test_group_owners_and_admins_recall_anything_at_any_time(
    suite: Suite, clock: FakeClock
) -> None:
    owner, ho = await suite.user("olga")
    admin, hadm = await suite.user("adam")
    member, hm = await suite.user("mia")
    other, hx = await suite.user("max")
    r = await suite.client.post(
        "/v1/groups", json={"name": "team", "member_ids": [admin, member, other]}, headers=ho
    )
    conv = r.json()["conversation_id"]
    r = await suite.client.patch(
        f"/v1/groups/{conv}/members/{admin}", json={"role": "admin"}, headers=ho
    )
    assert r.status_code == 200, r.text
    tap = await Tap.at_end(suite, suite.settings.topic_messages)
    by_member = await stored(suite, clock, conv, 1, member)
    by_owner = await stored(suite, clock, conv, 2, owner)
    clock.advance(10 * 86400)  # long past any window
    r = await suite.client.post(recall_url(conv, by_member), headers=hx)
    assert_problem(r, 403, "forbidden")  # a plain member: not someone else's
    r = await suite.client.post(recall_url(conv, by_member), headers=hm)
    assert_problem(r, 409, "window_passed")  # the sender: too late
    assert (await suite.client.post(recall_url(conv, by_member), headers=hadm)).status_code == 202
    assert (await suite.client.post(recall_url(conv, by_owner), headers=ho)).status_code == 202
    events_ = await published(suite, tap)
    assert [(e.sender_id, e.refers_to) for e in events_] == [
        (admin, by_member.msg_id),
        (owner, by_owner.msg_id),
    ]


async def test_the_sender_edits_text_within_the_window(suite: Suite, clock: FakeClock) -> None:
    alice, ha, _bob, hb, conv = await pair(suite)
    tap = await Tap.at_end(suite, suite.settings.topic_messages)
    m = await stored(suite, clock, conv, 1, alice)
    clock.advance(suite.settings.edit_window_seconds - 1)
    r = await suite.client.patch(
        edit_url(conv, m), json={"text": "fixed ✓"}, headers={**ha, "Idempotency-Key": "k1"}
    )
    assert r.status_code == 202, r.text
    (event,) = await published(suite, tap)
    assert event.content_type == events.EDIT and event.refers_to == m.msg_id
    assert event.body == "fixed ✓".encode() and event.sender_id == alice
    clock.advance(3600)
    # The same key after the window: the same event, nothing new on the bus.
    again = await suite.client.patch(
        edit_url(conv, m), json={"text": "fixed ✓", "client_msg_id": "k1"}, headers=ha
    )
    assert again.status_code == 202 and again.json()["msg_id"] == r.json()["msg_id"]
    republished = await published(suite, tap)
    assert [e.msg_id for e in republished] == [event.msg_id]  # stored once by the router
    r = await suite.client.patch(edit_url(conv, m), json={"text": "later"}, headers=ha)
    assert_problem(r, 409, "window_passed")
    # Applied by the router: history shows the new text and when.
    event.seq = 2
    await suite.store.insert_many([event])
    await suite.store.apply_events([event])
    page = (await suite.client.get(f"/v1/conversations/{conv}/messages", headers=hb)).json()
    first, second = page["messages"]
    assert first["text"] == "fixed ✓" and first["edited_at"] == event.server_ts
    assert second["text"] == "fixed ✓" and second["refers_to"] == str(m.msg_id)


async def test_edit_refusals(suite: Suite, clock: FakeClock) -> None:
    alice, ha, _bob, hb, conv = await pair(suite)
    _, hc = await suite.user("carol")
    m = await stored(suite, clock, conv, 1, alice)
    image = await stored(suite, clock, conv, 2, alice, content_type="image/png")
    ok = {"text": "new"}
    assert_problem(
        await suite.client.patch(edit_url(conv, m), json=ok, headers=hb), 403, "forbidden"
    )
    assert_problem(
        await suite.client.patch(edit_url(conv, m), json=ok, headers=hc), 403, "forbidden"
    )
    r = await suite.client.patch(edit_url(conv, image), json=ok, headers=ha)
    assert_problem(r, 422, "invalid_request")
    for bad in ({"text": ""}, {"text": "x" * (suite.settings.max_body_bytes + 1)}, {}):
        r = await suite.client.patch(edit_url(conv, m), json=bad, headers=ha)
        assert_problem(r, 422, "invalid_request")
    too_long_key = {"text": "new", "client_msg_id": "k" * 65}
    r = await suite.client.patch(edit_url(conv, m), json=too_long_key, headers=ha)
    assert_problem(r, 422, "invalid_request")
    recall = wire_pb2.Message(
        msg_id=m.msg_id + 100, conversation_id=conv, seq=3, sender_id=alice,
        content_type=events.RECALL, refers_to=m.msg_id, server_ts=clock.wall_ms(),
    )  # fmt: skip
    await suite.store.insert_many([recall])
    await suite.store.apply_events([recall])
    r = await suite.client.patch(edit_url(conv, m), json=ok, headers=ha)
    assert_problem(r, 409, "already_recalled")


async def test_a_message_from_before_joining_is_not_found(suite: Suite, clock: FakeClock) -> None:
    owner, ho = await suite.user("olga")
    late, hl = await suite.user("luke")
    conv = (await suite.client.post("/v1/groups", json={"name": "g"}, headers=ho)).json()[
        "conversation_id"
    ]
    old = await stored(suite, clock, conv, 1, owner)
    r = await suite.client.post(f"/v1/groups/{conv}/members", json={"user_ids": [late]}, headers=ho)
    assert r.status_code in (200, 201, 204), r.text
    r = await suite.client.patch(
        f"/v1/groups/{conv}/members/{late}", json={"role": "admin"}, headers=ho
    )
    assert r.status_code == 200, r.text
    # An admin now, but the message is from before they joined.
    assert_problem(await suite.client.post(recall_url(conv, old), headers=hl), 404, "not_found")


async def post(suite: Suite, headers: Headers, conv: str, client_msg_id: str) -> int:
    """A plain message sent over REST under ``client_msg_id``: its status."""
    r = await suite.client.post(
        f"/v1/conversations/{conv}/messages",
        json={"client_msg_id": client_msg_id, "text": "x"},
        headers=headers,
    )
    return r.status_code


async def test_a_client_cannot_take_the_key_of_a_recall_or_edit_first(
    suite: Suite, clock: FakeClock
) -> None:
    """Had a message taken the event's key, the late recall or edit would pass for a
    retry of an accepted one and skip its window."""
    alice, ha, _bob, _hb, conv = await pair(suite)
    carol, _ = await suite.user("carol")
    other = direct_conversation_id(alice, carol)
    m = await stored(suite, clock, conv, 1, alice)
    clock.advance(10 * 86400)
    digest = hashlib.blake2b(b"k", digest_size=8).hexdigest()
    # The keys events had before they were the server's own are any client's now...
    assert await post(suite, ha, other, f"recall:{m.msg_id}") == 202
    assert await post(suite, ha, other, f"edit:{m.msg_id}:{digest}") == 202
    # ...and the server's own are nobody else's.
    assert await post(suite, ha, other, recall_key(m.msg_id)) == 422
    assert await post(suite, ha, other, edit_key(m.msg_id, "k")) == 422
    assert_problem(await suite.client.post(recall_url(conv, m), headers=ha), 409, "window_passed")
    r = await suite.client.patch(
        edit_url(conv, m), json={"text": "rewritten", "client_msg_id": "k"}, headers=ha
    )
    assert_problem(r, 409, "window_passed")


async def test_a_blocked_pair_may_recall_but_not_edit(suite: Suite, clock: FakeClock) -> None:
    alice, ha, bob, hb, conv = await pair(suite)
    tap = await Tap.at_end(suite, suite.settings.topic_messages)
    by_bob = await stored(suite, clock, conv, 1, bob)
    by_alice = await stored(suite, clock, conv, 2, alice)
    assert (await suite.client.put(f"/v1/users/{bob}/block", headers=ha)).status_code == 204
    for editor, m in ((hb, by_bob), (ha, by_alice)):  # the blocked one and the blocker
        r = await suite.client.patch(edit_url(conv, m), json={"text": "new"}, headers=editor)
        problem = assert_problem(r, 403, "forbidden")
        assert "block" not in problem["detail"]  # neutral, like a refused send
    assert await published(suite, tap) == []
    # Taking one's own message back adds nothing: allowed.
    assert (await suite.client.post(recall_url(conv, by_bob), headers=hb)).status_code == 202
    (event,) = await published(suite, tap)
    assert event.content_type == events.RECALL and event.refers_to == by_bob.msg_id


async def test_a_dissolved_group_allows_neither_recall_nor_edit(
    suite: Suite, clock: FakeClock
) -> None:
    _owner, ho = await suite.user("olga")
    member, hm = await suite.user("mia")
    r = await suite.client.post(
        "/v1/groups", json={"name": "g", "member_ids": [member]}, headers=ho
    )
    conv = r.json()["conversation_id"]
    mine = await stored(suite, clock, conv, 1, member)
    assert (await suite.client.post(f"/v1/groups/{conv}/dissolve", headers=ho)).status_code == 200
    tap = await Tap.at_end(suite, suite.settings.topic_messages)
    r = await suite.client.patch(edit_url(conv, mine), json={"text": "new"}, headers=hm)
    assert_problem(r, 409, "group_dissolved")
    assert_problem(
        await suite.client.post(recall_url(conv, mine), headers=hm), 409, "group_dissolved"
    )
    # The owner, who may recall anything at any time elsewhere: not here either.
    assert_problem(
        await suite.client.post(recall_url(conv, mine), headers=ho), 409, "group_dissolved"
    )
    assert await published(suite, tap) == []
