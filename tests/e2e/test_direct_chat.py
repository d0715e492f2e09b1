"""1:1 chat end to end: a standalone suite in a child process, real TCP and WebSocket."""

from __future__ import annotations

import asyncio
import socket
import uuid

import httpx
import pytest

from im.client import ApiError, Connection, ImClient, SendError
from im.ids import direct_conversation_id
from im.protocol import FrameDecoder, encode_frame
from im.v1 import wire_pb2

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-9"


def name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def user(suite, prefix: str, device: str = "dev1", transport: str = "tcp") -> ImClient:
    client = ImClient(suite.gateway, transport=transport)
    username = name(prefix)
    await client.register(username, PASSWORD)
    await client.login(username, PASSWORD, device)
    client.username = username  # type: ignore[attr-defined]
    return client


async def next_message(client: ImClient, timeout: float = 10.0) -> wire_pb2.Message:
    async def first() -> wire_pb2.Message:
        async for message in client.messages():
            return message
        raise AssertionError(f"stream ended: {client.close_reason}")

    return await asyncio.wait_for(first(), timeout)


async def test_tcp_to_websocket_with_acks_and_echo(suite):
    alice = await user(suite, "alice")
    bob = await user(suite, "bob", transport="ws")
    try:
        await alice.connect()
        await bob.connect()
        ack = await alice.send_to_user(bob.username, "hello bob")
        assert ack.msg_id > 0 and ack.conversation_id == direct_conversation_id(
            alice.user_id, bob.user_id
        )

        got = await next_message(bob)
        assert (got.msg_id, got.seq, got.body, got.sender_id) == (
            ack.msg_id,
            1,
            b"hello bob",
            alice.user_id,
        )
        echo = await next_message(alice)  # the sender's own device learns the seq
        assert (echo.msg_id, echo.seq) == (ack.msg_id, 1)

        reply = await bob.send_to_user(alice.username, "hi alice")
        assert (await next_message(alice)).msg_id == reply.msg_id
        assert (await next_message(bob)).seq == 2

        # Bob's DeliverAck reaches his cursor through the bus and the router.
        async def bob_delivered() -> int:
            convs = await bob.gateway.conversations()
            return next(c for c in convs if c["conversation_id"] == ack.conversation_id)[
                "delivered_seq"
            ]

        for _ in range(50):
            if await bob_delivered() >= 2:
                break
            await asyncio.sleep(0.1)
        assert await bob_delivered() == 2
    finally:
        await alice.close()
        await bob.close()


async def test_resend_with_same_client_msg_id_is_stored_once(suite):
    alice = await user(suite, "alice")
    bob = await user(suite, "bob")
    try:
        await alice.connect()
        await bob.connect()
        conv = await alice.direct_conversation_with(bob.username)
        first = await alice.send(conv, "once", client_msg_id="cm-1")
        second = await alice.send(conv, "once", client_msg_id="cm-1")
        assert (first.msg_id, first.server_ts) == (second.msg_id, second.server_ts)
        third = await alice.send(conv, "twice", client_msg_id="cm-2")
        assert third.msg_id != first.msg_id

        got = [await next_message(bob), await next_message(bob)]
        assert [(m.msg_id, m.seq) for m in got] == [(first.msg_id, 1), (third.msg_id, 2)]
        history = await bob.gateway.history(conv, 0, 100)
        assert [m.msg_id for m in history.messages] == [first.msg_id, third.msg_id]
    finally:
        await alice.close()
        await bob.close()


async def test_offline_user_syncs_missed_messages_in_order(suite):
    alice = await user(suite, "alice")
    bob = await user(suite, "bob", device="phone")
    try:
        await alice.connect()
        conv = await alice.direct_conversation_with(bob.username)
        sent = [await alice.send(conv, f"while you were away {i}") for i in range(5)]

        await bob.connect()  # socket first, then sync pulls what was missed
        got = [await next_message(bob) for _ in range(5)]
        assert [m.msg_id for m in got] == [a.msg_id for a in sent]
        assert [m.seq for m in got] == [1, 2, 3, 4, 5]

        live = await alice.send(conv, "and now live")
        assert (await next_message(bob)).msg_id == live.msg_id
        assert bob.duplicates == 0 or all(m.seq for m in got)
    finally:
        await alice.close()
        await bob.close()


async def test_sync_plus_live_equals_history(suite):
    """Zulip-style check: what a device saw (sync + pushes) is the full history, once."""
    alice = await user(suite, "alice")
    bob = await user(suite, "bob")
    try:
        await alice.connect()
        conv = await alice.direct_conversation_with(bob.username)
        for i in range(3):
            await alice.send(conv, f"before {i}")
        await bob.connect()
        sender = asyncio.create_task(_send_many(alice, conv, 7))
        seen = [await next_message(bob) for _ in range(10)]
        await sender
        history = await bob.gateway.history(conv, 0, 100)
        assert [m.msg_id for m in seen] == [m.msg_id for m in history.messages]
        assert [m.seq for m in seen] == list(range(1, 11))
    finally:
        await alice.close()
        await bob.close()


async def _send_many(client: ImClient, conv: str, count: int) -> None:
    for i in range(count):
        await client.send(conv, f"during {i}")


async def test_heartbeat_timeout_closes_a_silent_connection(suite):
    alice = await user(suite, "alice")
    host, port = alice.login_result.connector.tcp.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            encode_frame(wire_pb2.Frame(auth=wire_pb2.Auth(token=alice.login_result.access_token)))
        )
        await writer.drain()
        decoder = FrameDecoder()
        frames: list[wire_pb2.Frame] = []
        # Then say nothing: the suite's heartbeat is 1 s, so about 3 s until close.
        async with asyncio.timeout(15):
            while data := await reader.read(65536):
                frames.extend(decoder.feed(data))
        kinds = [f.WhichOneof("kind") for f in frames]
        assert kinds[0] == "auth_ok"
        assert frames[-1].error.code == wire_pb2.ERROR_CODE_HEARTBEAT_TIMEOUT
    finally:
        writer.close()
        await alice.close()


async def test_second_login_of_the_same_device_kicks_the_first(suite):
    first = await user(suite, "alice", device="laptop")
    second = ImClient(suite.gateway)
    try:
        await first.connect()
        await second.login(first.username, PASSWORD, "laptop")
        await second.connect()
        kicked = await asyncio.wait_for(first.connection.wait_closed(), 10)
        assert first.connection.kick is not None, kicked
        assert first.connection.kick.reason == wire_pb2.KICK_REASON_DEVICE_LOGGED_IN_ELSEWHERE
        assert not second.connection.closed
    finally:
        await first.close()
        await second.close()


async def test_logout_revokes_the_token_and_kicks_the_connection(suite):
    alice = await user(suite, "alice", device="tablet")
    try:
        await alice.connect()
        token = alice.login_result.access_token
        await alice.gateway.logout()
        await asyncio.wait_for(alice.connection.wait_closed(), 10)
        assert alice.connection.kick.reason == wire_pb2.KICK_REASON_TOKEN_REVOKED
        async with httpx.AsyncClient() as http:
            reply = await http.get(
                f"{suite.gateway}/v1/users/me", headers={"Authorization": f"Bearer {token}"}
            )
        assert reply.status_code == 401
        with pytest.raises(Exception):  # noqa: B017 - AuthError from the connector
            await Connection.open(alice.login_result.connector.tcp, token)
    finally:
        await alice.close()


async def test_non_member_can_neither_read_nor_send(suite):
    alice = await user(suite, "alice")
    bob = await user(suite, "bob")
    eve = await user(suite, "eve")
    try:
        await alice.connect()
        conv = await alice.direct_conversation_with(bob.username)
        await alice.send(conv, "private")
        with pytest.raises(ApiError) as denied:
            await eve.gateway.history(conv, 0, 10)
        assert denied.value.status == 403
        await eve.connect()
        with pytest.raises(SendError) as refused:
            await eve.send(conv, "let me in")
        assert refused.value.code == wire_pb2.ERROR_CODE_FORBIDDEN
        assert not eve.connection.closed  # a refused send does not end the connection
    finally:
        for c in (alice, bob, eve):
            await c.close()


async def test_garbage_closes_only_that_connection(suite):
    alice = await user(suite, "alice")
    bob = await user(suite, "bob")
    try:
        await alice.connect()
        await bob.connect()
        host, port = suite.tcp.rsplit(":", 1)
        # A frame header claiming 2 GB, random bytes, and a WebSocket text message.
        for junk in (
            b"\x7f\xff\xff\xff" + b"x" * 10,
            b"\x00\x00\x00\x05hello",
            b"GET / HTTP/1.1\r\n\r\n",
        ):
            with socket.create_connection((host, int(port)), timeout=5) as raw:
                raw.sendall(junk)
                raw.settimeout(5)
                data = b""
                while chunk := raw.recv(65536):
                    data += chunk
                frames = FrameDecoder().feed(data)
                assert frames and frames[-1].WhichOneof("kind") == "error"
        ack = await alice.send_to_user(bob.username, "still fine")
        assert (await next_message(bob)).msg_id == ack.msg_id
    finally:
        await alice.close()
        await bob.close()
