"""Group events while the bus is down (services/gateway/group_events.py): the request
does not fail, the event waits and goes out, in order, once the bus takes it again."""

from __future__ import annotations

import json

import pytest

from im import events
from im.clock import FakeClock
from im.ports import BackendUnavailable
from im.v1 import wire_pb2
from services.gateway.group_events import RETRY_FIRST_SECONDS, SEND_ATTEMPTS, GroupEvents
from tests.services.gateway.conftest import Suite
from tests.services.gateway.test_group_lifecycle_api import event_tap, events_of, kinds_and_bodies
from tests.services.gateway.test_groups_api import create


class FlakyBus:
    """A ServerSender whose bus is up or down."""

    def __init__(self) -> None:
        self.up = False
        self.tries = 0
        self.sent: list[tuple[str, str]] = []  # (group, the event's name field)

    async def send(self, message: wire_pb2.Message) -> None:
        self.tries += 1
        if not self.up:
            raise BackendUnavailable("bus", "down")
        self.sent.append((message.conversation_id, json.loads(message.body)["name"]))


async def rename(group_events: GroupEvents, group_id: str, name: str, version: int) -> None:
    await group_events.emit(group_id, 7, events.GROUP_RENAMED, version, name=name)


async def test_events_wait_while_the_bus_is_down_then_go_out_in_order() -> None:
    bus, clock = FlakyBus(), FakeClock()
    group_events = GroupEvents(bus, clock)  # type: ignore[arg-type]
    try:
        await rename(group_events, "g:1", "one", 1)  # the request goes on
        assert (bus.tries, group_events.pending) == (SEND_ATTEMPTS, 1)
        # A later change of the same group waits behind it without trying the bus.
        await rename(group_events, "g:1", "two", 2)
        assert (bus.tries, group_events.pending) == (SEND_ATTEMPTS, 2)
        await rename(group_events, "g:2", "other", 1)
        assert group_events.pending == 3

        # Backing off while the bus stays down: 1 s, then 2 s, then 4 s.
        assert await clock.wait_for_sleep() == RETRY_FIRST_SECONDS
        clock.advance(RETRY_FIRST_SECONDS)
        assert await clock.wait_for_sleep() == 2 * RETRY_FIRST_SECONDS
        clock.advance(2 * RETRY_FIRST_SECONDS)
        assert await clock.wait_for_sleep() == 4 * RETRY_FIRST_SECONDS
        assert bus.sent == [] and group_events.pending == 3

        bus.up = True
        clock.advance(4 * RETRY_FIRST_SECONDS)
        await group_events._retrying  # ends once nothing waits
        assert bus.sent == [("g:1", "one"), ("g:1", "two"), ("g:2", "other")]
        assert group_events.pending == 0
        await rename(group_events, "g:1", "three", 3)  # sent at once again
        assert bus.sent[-1] == ("g:1", "three")
    finally:
        await group_events.close()


async def test_past_the_limit_an_event_is_lost_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    bus, clock = FlakyBus(), FakeClock()
    group_events = GroupEvents(bus, clock, max_pending=2)  # type: ignore[arg-type]
    try:
        for version, name in enumerate(("a", "b", "c"), start=1):
            await rename(group_events, "g:1", name, version)
        assert group_events.pending == 2
        assert "lost: 2 events already wait" in caplog.text
    finally:
        await group_events.close()
    assert "2 group events lost: the gateway stops" in caplog.text


async def test_a_change_that_changed_nothing_has_no_event() -> None:
    bus = FlakyBus()
    group_events = GroupEvents(bus, FakeClock())  # type: ignore[arg-type]
    await rename(group_events, "g:1", "same", 0)
    assert bus.tries == 0 and group_events.pending == 0


async def test_a_rename_while_the_bus_is_down_answers_and_its_event_follows(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, alice = await suite.user("alice")
    gid = (await create(suite, alice))["conversation_id"]
    tap = await event_tap(suite)
    clock = suite.gateway.gateway.group_events.clock = FakeClock()
    publish = suite.backends.bus.publish

    async def bus_down(*args: object, **kwargs: object) -> None:
        raise BackendUnavailable("bus", "down")

    monkeypatch.setattr(suite.backends.bus, "publish", bus_down)
    r = await suite.client.patch(f"/v1/groups/{gid}", json={"name": "crew"}, headers=alice)
    assert r.status_code == 200 and r.json()["name"] == "crew"
    assert suite.gateway.gateway.group_events.pending == 1 and await events_of(tap) == []

    monkeypatch.setattr(suite.backends.bus, "publish", publish)
    assert await clock.wait_for_sleep() == RETRY_FIRST_SECONDS
    clock.advance(RETRY_FIRST_SECONDS)
    await suite.gateway.gateway.group_events._retrying
    assert kinds_and_bodies(await events_of(tap))[0][0] == "renamed"
