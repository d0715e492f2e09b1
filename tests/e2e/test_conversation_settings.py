"""Members' own conversation settings end to end, in both modes: set over REST, told
to every online device of the user, listed (pinned first, then by last activity) for
a device that was offline, refused for non-members and bad values."""

from __future__ import annotations

import pytest

from im.client import ApiError, ImClient
from im.v1 import wire_pb2
from tests.e2e.helpers import new_user, next_event, same_user, take_messages

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateway(target) -> str:  # type: ignore[no-untyped-def]
    return target.gateway


async def next_settings(client: ImClient) -> wire_pb2.ConversationSettingsChanged:
    while True:
        event = await next_event(client)
        if isinstance(event, wire_pb2.ConversationSettingsChanged):
            return event


async def close_all(*clients: ImClient) -> None:
    for client in clients:
        await client.close()


async def test_a_change_reaches_the_users_other_devices_and_the_list(gateway):
    alice = await new_user(gateway, "alice")
    bob = await new_user(gateway, "bob")
    phone = await same_user(gateway, alice, "phone")
    laptop = await same_user(gateway, alice, "laptop")  # stays offline
    try:
        group = await alice.gateway.create_group("team", [bob.user_id])
        conv = group["conversation_id"]
        await alice.connect()
        await phone.connect()
        got = await alice.gateway.update_settings(conv, pinned=True, muted_until=-1, name="Work")
        assert (got["pinned"], got["muted"], got["muted_until"], got["name"]) == (
            True,
            True,
            -1,
            "Work",
        )
        told = await next_settings(phone)
        assert (told.conversation_id, told.pinned, told.muted_until, told.name) == (
            conv,
            True,
            -1,
            "Work",
        )
        assert told.updated_at == got["updated_at"]
        echoed = await next_settings(alice)  # the device that made it is told too
        assert echoed.pinned

        # The device that was offline reads the settings in the list.
        listed = {c["conversation_id"]: c for c in await laptop.gateway.conversations()}
        assert listed[conv]["settings"]["pinned"] is True
        assert listed[conv]["settings"]["name"] == "Work"
        # Only alice's: bob's settings of the same group are the defaults.
        theirs = {c["conversation_id"]: c for c in await bob.gateway.conversations()}
        assert theirs[conv]["settings"] == {
            "muted": False,
            "muted_until": 0,
            "pinned": False,
            "archived": False,
            "name": "",
            "updated_at": 0,
        }

        unmuted = await phone.gateway.update_settings(conv, muted_until=0, archived=True)
        assert (unmuted["muted"], unmuted["pinned"], unmuted["archived"]) == (False, True, True)
        assert (await next_settings(alice)).archived
    finally:
        await close_all(alice, bob, phone, laptop)


async def test_the_list_puts_pinned_first_then_the_most_recently_active(gateway):
    alice = await new_user(gateway, "alice")
    bob = await new_user(gateway, "bob")
    carol = await new_user(gateway, "carol")
    try:
        older = (await alice.gateway.create_group("older", [bob.user_id]))["conversation_id"]
        newer = (await alice.gateway.create_group("newer", [carol.user_id]))["conversation_id"]
        await alice.connect()
        await alice.send(older, "first")
        await take_messages(alice, 1)
        await alice.send(newer, "second")
        await take_messages(alice, 1)
        order = [c["conversation_id"] for c in await alice.gateway.conversations()]
        assert order.index(newer) < order.index(older)
        await alice.gateway.update_settings(older, pinned=True)
        listed = await alice.gateway.conversations()
        assert [c["conversation_id"] for c in listed][:2] == [older, newer]
        assert listed[0]["last_activity_at"] <= listed[1]["last_activity_at"]
    finally:
        await close_all(alice, bob, carol)


async def test_non_members_and_bad_values_are_refused(gateway):
    alice = await new_user(gateway, "alice")
    bob = await new_user(gateway, "bob")
    mallory = await new_user(gateway, "mallory")
    try:
        conv = (await alice.gateway.create_group("team", [bob.user_id]))["conversation_id"]
        with pytest.raises(ApiError) as caught:
            await mallory.gateway.update_settings(conv, pinned=True)
        assert caught.value.status == 403
        for bad in (
            {"muted_until": -5},
            {"muted_until": 2**62},  # centuries ahead
            {"name": "x" * 65},
            {"name": "bad\u0007name"},
            {},
            {"muted_until": 0, "mute_for_seconds": 60},
        ):
            with pytest.raises(ApiError) as caught:
                await alice.gateway.update_settings(conv, **bad)
            assert caught.value.status == 422, bad
        with pytest.raises(ApiError) as caught:
            await alice.gateway.update_settings("g:not-a-group", pinned=True)
        assert caught.value.status in (403, 404)
        muted = await alice.gateway.update_settings(conv, mute_for_seconds=3600)
        assert muted["muted"] and muted["muted_until"] > 0
    finally:
        await close_all(alice, bob, mallory)
