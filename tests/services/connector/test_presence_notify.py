"""Presence at the connector: online/offline of a user pushed to the devices of its 1:1
peers, the offline debounced on the fake clock, across devices and connectors."""

from __future__ import annotations

import pytest

from im.config import Settings
from im.runtime import local_connectors
from im.v1 import wire_pb2
from services.connector.presence_notify import MAX_INFLIGHT, RETRY_SECONDS
from services.connector.service import ConnectorCore
from tests.services.connector.helpers import AllowList, FakeDirectory, authed


def presences(conn) -> list[tuple[int, bool, int]]:  # type: ignore[no-untyped-def]
    return [
        (f.presence.user_id, f.presence.online, f.presence.last_seen_ms)
        for f in conn.frames
        if f.WhichOneof("kind") == "presence"
    ]


async def settle(core: ConnectorCore, clock, seconds: float) -> None:  # type: ignore[no-untyped-def]
    clock.advance(seconds)
    core.tick()
    await core.wait_background()


@pytest.fixture
def directory(setup) -> FakeDirectory:
    return setup[0].presence_notes._directory


async def test_online_then_offline_after_the_debounce_with_last_seen(setup, clock, directory):
    core, issuer, *_ = setup
    bob = await authed(core, issuer, 2)
    alice = await authed(core, issuer, 1)
    assert presences(bob) == [(1, True, clock.wall_ms())]
    gone_at = clock.wall_ms()
    core.closed(alice)
    await settle(core, clock, core.settings.presence_debounce_seconds - 0.5)
    assert len(presences(bob)) == 1  # still within the debounce
    await settle(core, clock, 1.0)
    assert presences(bob)[1:] == [(1, False, gone_at)]
    assert directory.last_seen[1] == gone_at
    assert core.presence_notes.stats.offline == 1


async def test_a_quick_reconnect_announces_nothing(setup, clock, directory):
    core, issuer, *_ = setup
    bob = await authed(core, issuer, 2)
    alice = await authed(core, issuer, 1)
    core.closed(alice)
    await settle(core, clock, 1.0)
    await authed(core, issuer, 1)  # back within the debounce
    await settle(core, clock, core.settings.presence_debounce_seconds * 2)
    assert presences(bob) == [(1, True, presences(bob)[0][2])]  # the first online only
    assert directory.last_seen == {}


async def test_another_device_still_online_means_no_offline(setup, clock):
    core, issuer, *_ = setup
    bob = await authed(core, issuer, 2)
    phone = await authed(core, issuer, 1, "phone")
    await authed(core, issuer, 1, "laptop")  # a second device announces nothing
    core.closed(phone)
    await settle(core, clock, core.settings.presence_debounce_seconds * 2)
    assert [online for _u, online, _t in presences(bob)] == [True]


async def test_a_hidden_user_is_never_pushed(setup, clock, directory):
    core, issuer, *_ = setup
    directory.hidden.add(1)
    bob = await authed(core, issuer, 2)
    alice = await authed(core, issuer, 1)
    core.closed(alice)
    await settle(core, clock, core.settings.presence_debounce_seconds * 2)
    assert presences(bob) == []
    assert 1 in directory.last_seen  # still recorded, for when the user shows it again


@pytest.fixture
async def second_core(setup, keys, clock, tmp_path):  # type: ignore[no-untyped-def]
    core, _issuer, _bus, _kv = setup
    other = ConnectorCore(
        Settings(data_dir=tmp_path, connector_id="c2"),
        core.backends,
        keys[1],
        clock=clock,
        authorizer=AllowList({(1, "d:1:2"), (2, "d:1:2")}),
        directory=core.presence_notes._directory,
    )
    local_connectors.add(core.connector_id, core.deliver)
    local_connectors.add("c2", other.deliver)
    yield other
    local_connectors.remove(core.connector_id)
    local_connectors.remove("c2")


async def test_moving_to_another_connector_within_the_debounce_is_no_offline(
    setup, clock, second_core
):
    core, issuer, *_ = setup
    bob = await authed(second_core, issuer, 2)  # bob is on the other connector
    alice = await authed(core, issuer, 1)
    assert [online for _u, online, _t in presences(bob)] == [True]
    core.closed(alice)
    await settle(core, clock, 1.0)
    await authed(second_core, issuer, 1)  # reconnects elsewhere: claims nothing new
    await second_core.wait_background()
    await settle(core, clock, core.settings.presence_debounce_seconds * 2)
    assert [online for _u, online, _t in presences(bob)] == [True]


async def test_typing_reaches_a_device_on_another_connector(setup, second_core):
    core, issuer, *_ = setup
    bob = await authed(second_core, issuer, 2)
    alice = await authed(core, issuer, 1)
    core.on_frame(
        alice,
        wire_pb2.Frame(
            typing=wire_pb2.Typing(conversation_id="d:1:2", state=wire_pb2.TYPING_STATE_STARTED)
        ),
    )
    await core.wait_background()
    assert [f.typing.user_id for f in bob.frames if f.WhichOneof("kind") == "typing"] == [1]


async def test_a_failing_user_service_costs_the_last_seen_never_the_offline(
    setup, clock, directory
):
    core, issuer, *_ = setup
    bob = await authed(core, issuer, 2)
    alice = await authed(core, issuer, 1)
    directory.down = True
    gone_at = clock.wall_ms()
    core.closed(alice)
    await settle(core, clock, core.settings.presence_debounce_seconds + 1)
    assert presences(bob)[1:] == [(1, False, gone_at)]  # pushed all the same
    assert directory.last_seen == {}
    assert core.presence_notes.stats.failures == 1
    # The announced-online key was let go: the next online is announced.
    await authed(core, issuer, 1)
    assert [online for _u, online, _t in presences(bob)] == [True, False, True]


async def test_an_offline_with_no_room_is_put_off_not_dropped(setup, clock, directory):
    core, issuer, *_ = setup
    notes = core.presence_notes
    bob = await authed(core, issuer, 2)
    alice = await authed(core, issuer, 1)
    notes.max_inflight = 0  # as if a thousand announcements were under way
    core.closed(alice)
    await settle(core, clock, core.settings.presence_debounce_seconds + 1)
    assert len(presences(bob)) == 1 and notes.stats.deferred == 1
    assert notes.pending() == 1  # still to be settled, not lost
    notes.max_inflight = MAX_INFLIGHT  # the others finished
    await settle(core, clock, RETRY_SECONDS)
    assert [online for _u, online, _t in presences(bob)] == [True, False]
    await authed(core, issuer, 1)  # the key was let go: announced again
    assert [online for _u, online, _t in presences(bob)] == [True, False, True]
