"""ImClient(reconnect=...): a drained connector or a lost connection is followed by a
new login and socket after a backoff measured on a fake clock; the stream goes on,
once each; final ends stay final."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from im.client import ImClient
from im.client.errors import ApiError, ClientError, ConnectionClosed
from im.client.reconnect import (
    Reconnected,
    Reconnecting,
    Reconnector,
    ReconnectPolicy,
    final_error,
    final_kick,
)
from im.clock import FakeClock
from im.v1 import wire_pb2

if TYPE_CHECKING:  # conftest is not importable by name reliably
    from conftest import FakeIm

CID = "d:1:2"
STEADY = ReconnectPolicy(initial_delay=1.0, factor=2.0, max_delay=8.0, jitter=0.0)


async def next_events(client: ImClient, n: int, timeout: float = 3.0) -> list[object]:
    out: list[object] = []
    async with asyncio.timeout(timeout):
        async for event in client.events():
            out.append(event)
            if len(out) == n:
                break
    return out


def kick(reason: int) -> wire_pb2.Frame:
    return wire_pb2.Frame(kick=wire_pb2.Kick(reason=reason))


@pytest.fixture
def users(fake_im: FakeIm) -> tuple[int, int]:
    return fake_im.add_user("alice"), fake_im.add_user("bob")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def online(fake_im: FakeIm, clock: FakeClock, **kwargs: object) -> ImClient:
    client = ImClient(fake_im.gateway_url, reconnect=STEADY, clock=clock, **kwargs)  # type: ignore[arg-type]
    await client.login("bob", "pw", "phone")
    await client.connect()
    return client


def no_session_of(fake_im: FakeIm, user_id: int) -> bool:
    return not any(s.user_id == user_id for s in fake_im.sessions)


async def test_a_draining_connector_is_left_for_a_new_login_after_the_backoff(
    fake_im: FakeIm, users: tuple[int, int], clock: FakeClock
) -> None:
    alice, bob = users
    client = await online(fake_im, clock)
    try:
        await fake_im.deliver(fake_im.store(CID, alice, "one"), user_id=bob)
        await fake_im.session(bob).send(kick(wire_pb2.KICK_REASON_RECONNECT))
        message, kicked, reconnecting = await next_events(client, 3)
        assert isinstance(message, wire_pb2.Message) and message.body == b"one"
        assert isinstance(kicked, wire_pb2.Kick)
        assert reconnecting == Reconnecting("kicked: RECONNECT", 1, 1.0)
        assert client.close_reason == "kicked: RECONNECT"

        # Paused on the clock: no new login, no socket, until it moves.
        assert await clock.wait_for_sleep() == 1.0
        await fake_im.wait_for(lambda: no_session_of(fake_im, bob))
        fake_im.store(CID, alice, "while away")
        assert fake_im.logins == 1 and no_session_of(fake_im, bob)

        clock.advance(1.0)
        reconnected, missed = await next_events(client, 2)
        assert reconnected == Reconnected("fake-1", 1)
        assert isinstance(missed, wire_pb2.Message)
        assert (missed.seq, missed.body) == (2, b"while away")
        assert fake_im.logins == 2 and client.connected
        assert client.close_reason is None

        # and the stream goes on live
        await fake_im.deliver(fake_im.store(CID, alice, "three"), user_id=bob)
        (live,) = await next_events(client, 1)
        assert isinstance(live, wire_pb2.Message) and live.seq == 3
    finally:
        await client.close()


async def test_the_pause_doubles_while_the_gateway_cannot_log_in(
    fake_im: FakeIm, users: tuple[int, int], clock: FakeClock
) -> None:
    _, bob = users
    client = await online(fake_im, clock)
    try:
        fake_im.login_problem = (503, "unavailable")
        await fake_im.session(bob).close()  # the connection is lost, no Kick
        (first,) = await next_events(client, 1)
        assert isinstance(first, Reconnecting) and (first.attempt, first.delay) == (1, 1.0)
        assert await clock.wait_for_sleep() == 1.0
        clock.advance(1.0)
        (second,) = await next_events(client, 1)
        assert second == Reconnecting(
            "reconnect failed: 503 unavailable: login refused by the test", 2, 2.0
        )
        assert await clock.wait_for_sleep() == 2.0
        clock.advance(1.9)
        assert clock.sleeps == [pytest.approx(0.1)] and not client.connected

        fake_im.login_problem = None
        clock.advance(0.1)
        (back,) = await next_events(client, 1)
        assert back == Reconnected("fake-1", 2) and client.connected
    finally:
        await client.close()


@pytest.mark.parametrize(
    "reason",
    [wire_pb2.KICK_REASON_DEVICE_LOGGED_IN_ELSEWHERE, wire_pb2.KICK_REASON_TOKEN_REVOKED],
)
async def test_a_final_kick_ends_the_stream(
    fake_im: FakeIm, users: tuple[int, int], clock: FakeClock, reason: int
) -> None:
    _, bob = users
    client = await online(fake_im, clock)
    try:
        await fake_im.session(bob).send(kick(reason))
        events = [e async for e in client.events()]  # ends by itself
        assert [type(e) for e in events] == [wire_pb2.Kick]
        assert clock.sleeps == [] and fake_im.logins == 1
        assert client.close_reason == f"kicked: {wire_pb2.KickReason.Name(reason)[12:]}"
    finally:
        await client.close()


async def test_a_refused_password_ends_the_stream(
    fake_im: FakeIm, users: tuple[int, int], clock: FakeClock
) -> None:
    _, bob = users
    client = await online(fake_im, clock)
    try:
        fake_im.users["bob"] = (bob, "changed elsewhere")
        await fake_im.session(bob).send(kick(wire_pb2.KICK_REASON_RECONNECT))
        await clock.wait_for_sleep()
        clock.advance(1.0)
        events = [e async for e in client.events()]
        assert [type(e) for e in events] == [wire_pb2.Kick, Reconnecting]
        assert client.close_reason is not None
        assert client.close_reason.startswith("cannot reconnect: 401 invalid_credentials")
    finally:
        await client.close()


async def test_close_during_the_pause_ends_the_stream(
    fake_im: FakeIm, users: tuple[int, int], clock: FakeClock
) -> None:
    _, bob = users
    client = await online(fake_im, clock)
    await fake_im.session(bob).close()
    await clock.wait_for_sleep()
    await client.close()
    events = [e async for e in client.events()]
    assert [type(e) for e in events] == [Reconnecting]
    assert clock.sleeps == [] and fake_im.logins == 1


async def test_without_sync_a_reconnect_catches_up_the_followed_conversations(
    fake_im: FakeIm, users: tuple[int, int], clock: FakeClock
) -> None:
    alice, bob = users
    for text in ("old 1", "old 2"):
        fake_im.store(CID, alice, text)
    client = ImClient(fake_im.gateway_url, reconnect=STEADY, clock=clock)
    try:
        await client.login("bob", "pw", "phone")
        client.follow(CID, 2)  # shown from history already
        await client.connect(sync=False)
        await fake_im.session(bob).close()
        await clock.wait_for_sleep()
        fake_im.store(CID, alice, "missed")
        clock.advance(1.0)
        reconnecting, reconnected, missed = await next_events(client, 3)
        assert isinstance(reconnecting, Reconnecting) and isinstance(reconnected, Reconnected)
        assert isinstance(missed, wire_pb2.Message) and (missed.seq, missed.body) == (3, b"missed")
    finally:
        await client.close()


def test_the_policy_doubles_up_to_its_ceiling_with_jitter() -> None:
    policy = ReconnectPolicy(initial_delay=0.5, factor=2.0, max_delay=4.0, jitter=0.2)
    assert [policy.delay(n, lambda: 0.5) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    assert policy.delay(1, lambda: 0.0) == pytest.approx(0.4)
    assert policy.delay(1, lambda: 1.0) == pytest.approx(0.6)


def test_which_ends_are_final() -> None:
    assert final_kick(wire_pb2.Kick(reason=wire_pb2.KICK_REASON_TOKEN_REVOKED))
    assert not final_kick(wire_pb2.Kick(reason=wire_pb2.KICK_REASON_RECONNECT))
    assert not final_kick(None)
    assert final_error(ApiError(401, "invalid_credentials", "no"))
    assert final_error(ClientError("call login() first"))
    for passing in (
        ApiError(0, "unreachable", "down"),
        ApiError(503, "no_connector", "none"),
        ApiError(429, "rate_limited", "wait", retry_after=5),
        ConnectionClosed("refused"),
    ):
        assert not final_error(passing), passing


async def test_a_retry_after_lengthens_the_pause_and_attempts_run_out() -> None:
    clock = FakeClock()
    events: list[object] = []
    ended: list[str] = []

    async def refuse(attempt: int) -> None:
        raise ApiError(429, "rate_limited", "slow down", retry_after=10)

    policy = ReconnectPolicy(initial_delay=1.0, jitter=0.0, max_attempts=2)
    run = asyncio.create_task(
        Reconnector(policy, clock, refuse, events.append, ended.append).run("lost")
    )
    assert await clock.wait_for_sleep() == 1.0
    clock.advance(1.0)
    await asyncio.sleep(0)
    assert await clock.wait_for_sleep() == 10.0  # not 2: the gateway asked for 10
    clock.advance(10.0)
    await asyncio.wait_for(run, 3)
    assert [e.delay for e in events] == [1.0, 10.0]  # type: ignore[attr-defined]
    (why,) = ended
    assert why.startswith("reconnect failed: 429 rate_limited") and "retry after 10 s" in why
    assert why.endswith("(gave up after 2 attempts)")
