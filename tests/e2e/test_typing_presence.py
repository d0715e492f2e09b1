"""Typing and presence end to end, in both modes: typing relayed to the other member,
refused for a non-member and across a block (as a Send is); online/offline pushed to
1:1 peers after the debounce (a quick reconnect announces nothing); the presence
endpoint; hidden presence."""

from __future__ import annotations

import asyncio
import time

import pytest

from im.client import ApiError, ImClient, SendError
from im.v1 import wire_pb2
from tests.e2e.helpers import new_user, next_event

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateway(target) -> str:  # type: ignore[no-untyped-def]
    return target.gateway


async def next_of(client: ImClient, kind: type, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    """The next event of that type (others in between are skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        event = await next_event(client, max(left, 0.01))
        if isinstance(event, kind):
            return event


async def pair(gateway: str) -> tuple[ImClient, ImClient, str]:
    alice, bob = await new_user(gateway, "alice"), await new_user(gateway, "bob")
    conv = (await alice.gateway.direct_conversation(bob.user_id))["conversation_id"]
    return alice, bob, conv


async def close_all(*clients: ImClient) -> None:
    for client in clients:
        await client.close()


async def test_bob_sees_alice_typing_and_a_stranger_is_refused(gateway):
    alice, bob, conv = await pair(gateway)
    carol = await new_user(gateway, "carol")
    try:
        await bob.connect()
        await alice.connect()
        await alice.send_typing(conv)
        typing = await next_of(bob, wire_pb2.Typing)
        assert (typing.conversation_id, typing.user_id, typing.state) == (
            conv,
            alice.user_id,
            wire_pb2.TYPING_STATE_STARTED,
        )
        assert typing.expires_in_ms > 0
        assert bob.typing_in(conv) == [alice.user_id]

        await carol.connect()
        await carol.send_typing(conv)
        refused = await next_of(carol, wire_pb2.Error)
        assert refused.code == wire_pb2.ERROR_CODE_FORBIDDEN
        assert carol.connected  # refused, not disconnected

        await alice.send_typing(conv, started=False)
        stopped = await next_of(bob, wire_pb2.Typing)
        assert stopped.state == wire_pb2.TYPING_STATE_STOPPED  # carol's never came
        assert bob.typing_in(conv) == []
    finally:
        await close_all(alice, bob, carol)


async def send_refused(client: ImClient, conversation_id: str) -> SendError:
    """The refusal of a Send, once a block reached the connector (distributed: a
    membership event on the bus, within about a second)."""
    for attempt in range(50):
        try:
            await client.send(conversation_id, f"still there? {attempt}")
        except SendError as error:
            return error
        await asyncio.sleep(0.1)
    raise AssertionError("the block never took effect")


async def test_after_a_block_typing_reaches_nobody_and_is_refused_as_a_send(gateway):
    alice, bob, conv = await pair(gateway)
    carol = await new_user(gateway, "carol")
    try:
        team = (await alice.gateway.create_group("team", [carol.user_id]))["conversation_id"]
        for client in (alice, bob, carol):
            await client.connect()
        await alice.gateway.block(bob.user_id)
        sent = await send_refused(bob, conv)
        await bob.send_typing(conv)
        typed = await next_of(bob, wire_pb2.Error)
        # The words of the refused Send: bob learns nothing more of the block.
        assert (typed.code, typed.message) == (wire_pb2.ERROR_CODE_FORBIDDEN, sent.message)
        await carol.send_typing(team)
        typing = await next_of(alice, wire_pb2.Typing)
        assert typing.user_id == carol.user_id  # bob's was refused, never relayed
    finally:
        await close_all(alice, bob, carol)


async def test_typing_in_a_group_reaches_every_other_member(gateway):
    alice, bob, carol = [await new_user(gateway, n) for n in ("alice", "bob", "carol")]
    try:
        group = await alice.gateway.create_group("team", [bob.user_id, carol.user_id])
        conv = group["conversation_id"]
        for client in (bob, carol, alice):
            await client.connect()
        await alice.send_typing(conv)
        for client in (bob, carol):
            typing = await next_of(client, wire_pb2.Typing)
            assert (typing.conversation_id, typing.user_id) == (conv, alice.user_id)
    finally:
        await close_all(alice, bob, carol)


async def test_offline_after_the_debounce_with_last_seen_and_the_presence_endpoint(gateway):
    alice, bob, conv = await pair(gateway)
    try:
        await bob.connect()
        await alice.connect()
        online = await next_of(bob, wire_pb2.Presence)
        assert (online.user_id, online.online) == (alice.user_id, True)
        (seen_by_alice,) = await alice.conversation_presence(conv)
        assert (seen_by_alice["user_id"], seen_by_alice["online"]) == (bob.user_id, True)

        before = int(time.time() * 1000)
        await alice.close()
        offline = await next_of(bob, wire_pb2.Presence)
        assert (offline.user_id, offline.online) == (alice.user_id, False)
        assert offline.last_seen_ms >= before - 1000
        assert bob.presence.get(alice.user_id).online is False
        (seen_by_bob,) = await bob.conversation_presence(conv)
        assert seen_by_bob == {
            "user_id": alice.user_id,
            "online": False,
            "last_seen_ms": offline.last_seen_ms,
        }
    finally:
        await close_all(alice, bob)


async def test_a_quick_reconnect_announces_neither_offline_nor_online(gateway):
    alice, bob, _conv = await pair(gateway)
    try:
        await bob.connect()
        await alice.connect()
        assert (await next_of(bob, wire_pb2.Presence)).online
        await alice.connection.close()  # the socket drops...
        await alice.connect()  # ...and is back well within the debounce
        final = int(time.time() * 1000)
        await alice.close()
        # The first presence bob hears of after the blip is the final offline.
        presence = await next_of(bob, wire_pb2.Presence)
        assert (presence.user_id, presence.online) == (alice.user_id, False)
        assert presence.last_seen_ms >= final - 1000
    finally:
        await close_all(alice, bob)


async def test_presence_is_for_members_only(gateway):
    alice, bob, conv = await pair(gateway)
    carol = await new_user(gateway, "carol")
    try:
        with pytest.raises(ApiError) as refused:
            await carol.gateway.conversation_presence(conv)
        assert refused.value.status == 403
    finally:
        await close_all(alice, bob, carol)


async def test_hidden_presence_is_never_pushed_nor_shown(gateway):
    alice, bob, conv = await pair(gateway)
    carol = await new_user(gateway, "carol")
    await carol.gateway.direct_conversation(bob.user_id)
    try:
        assert (await alice.gateway.set_presence_visible(False))["visible"] is False
        await bob.connect()
        await alice.connect()
        (seen,) = await bob.conversation_presence(conv)
        assert seen == {"user_id": alice.user_id, "online": False, "last_seen_ms": None}
        await alice.close()
        await carol.connect()
        # Bob hears of carol, never of alice (neither her online nor her offline).
        presence = await next_of(bob, wire_pb2.Presence)
        assert presence.user_id == carol.user_id
        (seen,) = await bob.conversation_presence(conv)
        assert seen["last_seen_ms"] is None
    finally:
        await close_all(alice, bob, carol)
