"""ImClient: sync + live = full history, once each, in seq order (fake gateway + connector)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from im.client import ImClient
from im.v1 import wire_pb2

if TYPE_CHECKING:  # conftest is not importable by name reliably
    from conftest import FakeIm, FakeSession

CID = "d:1:2"


async def take(client: ImClient, n: int, timeout: float = 3.0) -> list[wire_pb2.Message]:
    out: list[wire_pb2.Message] = []
    async with asyncio.timeout(timeout):
        async for message in client.messages():
            out.append(message)
            if len(out) == n:
                break
    return out


async def nothing_more(client: ImClient) -> None:
    with pytest.raises(TimeoutError):
        await take(client, 1, timeout=0.15)


@pytest.fixture
def users(fake_im: FakeIm) -> tuple[int, int]:
    return fake_im.add_user("alice"), fake_im.add_user("bob")


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_sync_then_live(fake_im: FakeIm, users: tuple[int, int], transport: str) -> None:
    alice, bob = users
    for i in range(3):
        fake_im.store(CID, alice, f"offline {i + 1}")
    async with ImClient(fake_im.gateway_url, transport=transport) as client:  # type: ignore[arg-type]
        await client.login("bob", "pw", "phone")
        await client.connect()
        assert [m.seq for m in await take(client, 3)] == [1, 2, 3]
        assert fake_im.rest_acks == [(bob, CID, 3)]  # synced messages acked over REST

        live = fake_im.store(CID, alice, "live 4")
        await fake_im.deliver(live, user_id=bob)
        await fake_im.deliver(live, user_id=bob)  # retransmit
        (m4,) = await take(client, 1)
        assert (m4.seq, m4.body) == (4, b"live 4")
        await fake_im.wait_for(lambda: fake_im.delivered.get((bob, CID)) == 4)
        await nothing_more(client)
        assert client.duplicates == 1
        assert client.cursor(CID) == 4


async def test_live_during_sync_is_not_shown_twice(fake_im: FakeIm, users: tuple[int, int]) -> None:
    alice, bob = users
    for i in range(3):
        fake_im.store(CID, alice, f"m{i + 1}")

    async def push_latest(session: FakeSession) -> None:
        # seq 3 arrives live right after Auth, before the client has synced
        await fake_im.deliver(fake_im.messages[CID][-1], user_id=session.user_id)

    fake_im.on_auth = push_latest
    async with ImClient(fake_im.gateway_url) as client:
        await client.login("bob", "pw", "phone")
        await client.connect()
        assert [m.seq for m in await take(client, 3)] == [1, 2, 3]
        await nothing_more(client)
        assert client.duplicates == 1
        # the live copy is acked even though sync handed it out
        await fake_im.wait_for(lambda: fake_im.delivered.get((bob, CID)) == 3)


async def test_gap_is_pulled_before_the_live_message(
    fake_im: FakeIm, users: tuple[int, int]
) -> None:
    alice, bob = users
    async with ImClient(fake_im.gateway_url) as client:
        await client.login("bob", "pw", "phone")
        await client.connect()
        fake_im.store(CID, alice, "missed 1")
        fake_im.store(CID, alice, "missed 2")
        await fake_im.deliver(fake_im.store(CID, alice, "live 3"), user_id=bob)
        assert [m.body for m in await take(client, 3)] == [b"missed 1", b"missed 2", b"live 3"]
        assert (bob, CID, 2) in fake_im.rest_acks  # the gap, acked over REST
        await fake_im.wait_for(lambda: fake_im.delivered.get((bob, CID)) == 3)


async def test_send_to_user_round_trip(fake_im: FakeIm, users: tuple[int, int]) -> None:
    alice, bob = users
    async with ImClient(fake_im.gateway_url) as a, ImClient(fake_im.gateway_url) as b:
        await a.login("alice", "pw", "laptop")
        await b.login("bob", "pw", "phone")
        await a.connect()
        await b.connect()
        ack = await a.send_to_user("bob", "hi bob")
        assert ack.conversation_id == CID
        (got,) = await take(b, 1)
        assert (got.msg_id, got.sender_id, got.body) == (ack.msg_id, alice, b"hi bob")
        (echo,) = await take(a, 1)  # the sender's device learns the seq too
        assert echo.msg_id == ack.msg_id and echo.seq == 1
        await b.read(CID, got.seq)
        await fake_im.wait_for(lambda: bool(fake_im.session(bob).of_kind("read")))


async def test_reconnect_after_kick_logs_in_again(fake_im: FakeIm, users: tuple[int, int]) -> None:
    alice, bob = users
    async with ImClient(fake_im.gateway_url) as client:
        await client.login("bob", "pw", "phone")
        await client.connect()
        await fake_im.deliver(fake_im.store(CID, alice, "one"), user_id=bob)
        await fake_im.wait_for(lambda: fake_im.delivered.get((bob, CID)) == 1)
        await fake_im.session(bob).send(
            wire_pb2.Frame(kick=wire_pb2.Kick(reason=wire_pb2.KICK_REASON_RECONNECT))
        )
        events = [e async for e in client.events()]
        assert [type(e) for e in events] == [wire_pb2.Message, wire_pb2.Kick]
        assert client.close_reason == "kicked: RECONNECT"

        fake_im.store(CID, alice, "while away")
        first_login = client.login_result
        await client.connect()
        assert client.login_result is not first_login
        (m,) = await take(client, 1)
        assert (m.seq, m.body) == (2, b"while away")
