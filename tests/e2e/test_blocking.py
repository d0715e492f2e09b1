"""Blocking and privacy end to end, in both modes: a block stops the pair's 1:1 sends
at once (both ways, with a neutral refusal), keeps the blocked user from adding the
blocker to groups, and an unblock lets messages through again."""

from __future__ import annotations

import asyncio

import pytest

from im.client import ApiError, ImClient, SendError
from im.v1 import wire_pb2
from tests.e2e.helpers import new_user, take_messages

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateway(target) -> str:  # type: ignore[no-untyped-def]
    return target.gateway


async def refused(client: ImClient, peer: ImClient, text: str) -> SendError:
    """The refusal of a send to ``peer``. A block reaches the connectors by a
    membership event on the bus (distributed: within about a second), so sends made
    before it arrives may still go through."""
    for attempt in range(50):
        try:
            await client.send_to_user(peer.username, f"{text} {attempt}")  # type: ignore[attr-defined]
        except SendError as error:
            return error
        await asyncio.sleep(0.1)
    raise AssertionError("the block never took effect")


async def message_with(client: ImClient, body: bytes) -> None:
    """Skips what arrived before (sends that beat the block to the connector)."""
    for _ in range(60):
        if (await take_messages(client, 1))[0].body == body:
            return
    raise AssertionError(f"no message {body!r}")


async def sent_eventually(client: ImClient, peer: ImClient, text: str) -> None:
    """After an unblock: the connector may still hold the refusal for a moment."""
    for _ in range(50):
        try:
            await client.send_to_user(peer.username, text)  # type: ignore[attr-defined]
            return
        except SendError:
            await asyncio.sleep(0.1)
    raise AssertionError("the unblock never took effect")


async def test_a_block_stops_1to1_sends_both_ways_until_unblocked(gateway):
    alice, bob = [await new_user(gateway, n) for n in ("alice", "bob")]
    try:
        await alice.connect()
        await bob.connect()
        await bob.send_to_user(alice.username, "hi alice")  # type: ignore[attr-defined]
        assert [m.body for m in await take_messages(alice, 1)] == [b"hi alice"]

        await alice.gateway.block(bob.user_id)
        assert await alice.gateway.blocks() == [bob.user_id]
        error = await refused(bob, alice, "are you there?")
        assert error.code == wire_pb2.ERROR_CODE_FORBIDDEN
        assert "block" not in str(error)  # neutral: bob is not told
        assert (await refused(alice, bob, "bye")).code == wire_pb2.ERROR_CODE_FORBIDDEN
        # The history stays readable to both.
        cid = await bob.direct_conversation_with(alice.user_id)
        page = await bob.gateway.history(cid)
        assert page.messages[0].body == b"hi alice"

        await alice.gateway.unblock(bob.user_id)
        await sent_eventually(bob, alice, "back again")
        await message_with(alice, b"back again")
    finally:
        await alice.close()
        await bob.close()


async def test_blocked_and_contacts_only_users_cannot_be_added_to_groups(gateway):
    alice, bob, carol = [await new_user(gateway, n) for n in ("alice", "bob", "carol")]
    try:
        await alice.gateway.block(bob.user_id)
        with pytest.raises(ApiError) as err:
            await bob.gateway.create_group("team", [alice.user_id])
        assert err.value.status == 403

        await carol.gateway.set_privacy(invites_from_contacts_only=True)
        with pytest.raises(ApiError) as err:
            await alice.gateway.create_group("team", [carol.user_id])
        assert err.value.status == 403
        # carol reads what alice wrote her: alice is now a contact of hers.
        await carol.connect()
        await alice.connect()
        ack = await alice.send_to_user(carol.username, "hello carol")  # type: ignore[attr-defined]
        message = (await take_messages(carol, 1))[0]
        await carol.gateway.read(ack.conversation_id, message.seq)  # stored before it answers
        group = await alice.gateway.create_group("team", [carol.user_id])
        assert group["member_count"] == 2
    finally:
        for client in (alice, bob, carol):
            await client.close()
