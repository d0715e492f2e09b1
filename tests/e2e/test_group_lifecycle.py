"""The group lifecycle end to end, in both modes: changes arrive as system events in
the group's seq stream, in order with the chat; joining by link; transfer then leave;
a dissolved group refuses sends on the socket and keeps its history readable."""

from __future__ import annotations

import json

import pytest

from im import events
from im.client import ApiError, ImClient, SendError
from im.client.group_events import describe
from im.v1 import wire_pb2
from tests.e2e.helpers import new_user, take_messages

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateway(target) -> str:  # type: ignore[no-untyped-def]
    return target.gateway


async def close_all(*clients: ImClient) -> None:
    for client in clients:
        await client.close()


def kinds(messages: list[wire_pb2.Message]) -> list[str]:
    return [m.content_type.removeprefix(events.GROUP_EVENT_PREFIX) for m in messages]


async def test_a_rename_reaches_every_member_in_order_with_the_chat(gateway):
    alice, bob, carol = [await new_user(gateway, n) for n in ("alice", "bob", "carol")]
    try:
        conv = (await alice.gateway.create_group("team", [bob.user_id, carol.user_id]))[
            "conversation_id"
        ]
        await alice.connect()
        await bob.connect()  # carol is offline: she syncs later
        await alice.send(conv, "before")
        await alice.gateway.rename_group(conv, "crew")
        await alice.send(conv, "after")
        for client in (alice, bob):
            got = await take_messages(client, 3)
            assert [m.seq for m in got] == [1, 2, 3]
            assert kinds(got) == ["text/plain", "renamed", "text/plain"]
            assert json.loads(got[1].body) == {"actor_id": alice.user_id, "name": "crew"}
            assert got[1].sender_id == alice.user_id
        await carol.connect()
        pulled = await take_messages(carol, 3)
        assert kinds(pulled) == ["text/plain", "renamed", "text/plain"]
        line = describe(pulled[1].content_type, pulled[1].body, {alice.user_id: "alice"}.get)
        assert line == 'alice renamed the group to "crew"'
        assert (await carol.gateway.group(conv))["name"] == "crew"
    finally:
        await close_all(alice, bob, carol)


async def test_joining_by_link_is_an_event_the_joiner_sees_and_nothing_before(gateway):
    alice, bob, dave = [await new_user(gateway, n) for n in ("alice", "bob", "dave")]
    try:
        conv = (await alice.gateway.create_group("team", [bob.user_id]))["conversation_id"]
        await alice.connect()
        await bob.connect()
        await alice.send(conv, "private past")
        await take_messages(bob, 1)  # numbered before dave joins
        invite = await alice.gateway.create_invite(conv, max_uses=1)
        await dave.connect()
        joined = await dave.gateway.join_group(invite["token"])
        assert joined == {"conversation_id": conv, "name": "team", "status": "joined"}
        (event,) = await take_messages(dave, 1)  # pushed live: he is a member by then
        assert event.content_type == events.GROUP_MEMBER_JOINED and event.seq == 2
        assert event.sender_id == dave.user_id
        assert (await take_messages(bob, 1))[0].msg_id == event.msg_id
        await alice.send(conv, "welcome")
        assert [m.seq for m in await take_messages(dave, 1)] == [3]
        history = await dave.gateway.history(conv, 0, 10)
        assert [m.seq for m in history.messages] == [2, 3]  # not the private past
        eve = await new_user(gateway, "eve")
        with pytest.raises(ApiError) as used_up:
            await eve.gateway.join_group(invite["token"])
        assert used_up.value.status == 410
        await eve.close()
    finally:
        await close_all(alice, bob, dave)


async def test_transfer_then_the_old_owner_leaves_and_gets_nothing_more(gateway):
    alice, bob = [await new_user(gateway, n) for n in ("alice", "bob")]
    try:
        conv = (await alice.gateway.create_group("team", [bob.user_id]))["conversation_id"]
        await alice.connect()
        await bob.connect()
        with pytest.raises(ApiError) as refused:
            await alice.gateway.leave_group(conv)
        assert refused.value.status == 409
        await alice.gateway.transfer_group(conv, bob.user_id)
        # Both see the transfer (delivered to whoever is a member when it is routed:
        # alice waits for it before leaving).
        assert kinds(await take_messages(alice, 1)) == ["owner_transferred"]
        assert kinds(await take_messages(bob, 1)) == ["owner_transferred"]
        await alice.gateway.leave_group(conv)
        assert kinds(await take_messages(bob, 1)) == ["member_left"]
        assert (await bob.gateway.group(conv))["my_role"] == "owner"
        await bob.send(conv, "just me now")
        assert kinds(await take_messages(bob, 1)) == ["text/plain"]
        # alice is gone: neither her own leaving nor what followed reaches her.
        with pytest.raises(AssertionError):
            await take_messages(alice, 1, timeout=2)
    finally:
        await close_all(alice, bob)


async def test_a_dissolved_group_refuses_sends_and_keeps_its_history(gateway):
    alice, bob = [await new_user(gateway, n) for n in ("alice", "bob")]
    try:
        conv = (await alice.gateway.create_group("team", [bob.user_id]))["conversation_id"]
        await alice.connect()
        await bob.connect()
        await bob.send(conv, "hello")  # bob's send permission is now cached
        await take_messages(alice, 1)
        # The dissolution reaches connectors (membership topic) before its event
        # reaches bob, so once he sees the event his next send is refused.
        await alice.gateway.dissolve_group(conv)
        event = (await take_messages(bob, 2))[1]  # his own "hello" came back first
        assert event.content_type == events.GROUP_DISSOLVED
        with pytest.raises(SendError) as refused:
            await bob.send(conv, "anyone?")
        assert refused.value.code == wire_pb2.ERROR_CODE_FORBIDDEN
        assert "dissolved" in refused.value.message
        history = await bob.gateway.history(conv, 0, 10)
        assert kinds(history.messages) == ["text/plain", "dissolved"]
        listed = {c["conversation_id"]: c for c in await bob.gateway.conversations()}
        assert listed[conv]["dissolved"] is True
        with pytest.raises(ApiError) as frozen:
            await alice.gateway.rename_group(conv, "zombie")
        assert frozen.value.status == 409
    finally:
        await close_all(alice, bob)
