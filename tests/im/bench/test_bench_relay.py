"""The bare relay over real sockets, driven by the project's client library."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from im.bench.relay import parse_relay_token, relay_token, serve
from im.client import AuthError, Connection
from im.protocol import FrameDecoder, encode_frame
from im.v1 import wire_pb2


@pytest.fixture
async def relay():
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve("127.0.0.1", 0, ready))
    host, port = await asyncio.wait_for(ready, 5)
    yield f"{host}:{port}"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_token_round_trip() -> None:
    assert parse_relay_token(relay_token(7, ["d:1:2", "g:3"])) == (7, ["d:1:2", "g:3"])
    with pytest.raises(ValueError):
        parse_relay_token("Bearer xyz")


async def test_send_is_acked_and_delivered_to_the_pair_and_back(relay: str) -> None:
    a = await Connection.open(relay, relay_token(1, ["d:1:2"]))
    b = await Connection.open(relay, relay_token(2, ["d:1:2"]))
    try:
        assert a.user_id == 1 and b.user_id == 2
        ack = await a.send("d:1:2", b"hello", "application/octet-stream")
        got = await b.next_event(5)
        assert isinstance(got, wire_pb2.Message)
        assert (got.msg_id, got.seq, got.sender_id, got.body) == (ack.msg_id, 1, 1, b"hello")
        echo = await a.next_event(5)  # the sender's own copy, as the suite sends it
        assert echo.msg_id == ack.msg_id
        await b.send("d:1:2", b"back")
        assert (await a.next_event(5)).body == b"back"
        assert (await b.next_event(5)).seq == 2
        await b.ping()
    finally:
        await a.close()
        await b.close()


async def test_raw_frames_are_forwarded_only_within_the_conversation(relay: str) -> None:
    host, port = relay.rsplit(":", 1)
    socks = [await asyncio.open_connection(host, int(port)) for _ in range(3)]
    convs = ["d:1:2", "d:1:2", "d:3:4"]
    for i, (_, writer) in enumerate(socks):
        writer.write(
            encode_frame(wire_pb2.Frame(auth=wire_pb2.Auth(token=relay_token(i + 1, [convs[i]]))))
        )
    decoders = [FrameDecoder() for _ in socks]

    async def frames(i: int, count: int) -> list[wire_pb2.Frame]:
        out: list[wire_pb2.Frame] = []
        while len(out) < count:
            out += decoders[i].feed(await asyncio.wait_for(socks[i][0].read(65536), 5))
        return out

    for i in range(3):
        assert (await frames(i, 1))[0].WhichOneof("kind") == "auth_ok"
    send = wire_pb2.Send(client_msg_id="m1", conversation_id="d:1:2", body=b"x")
    socks[0][1].write(encode_frame(wire_pb2.Frame(request_id=9, send=send)))
    kinds = [f.WhichOneof("kind") for f in await frames(0, 2)]
    assert kinds == ["send_ack", "deliver"]
    (deliver,) = await frames(1, 1)
    assert deliver.deliver.message.body == b"x"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(socks[2][0].read(65536), 0.3)  # another conversation
    for _, writer in socks:
        writer.close()


async def test_a_bad_token_is_refused(relay: str) -> None:
    with pytest.raises(AuthError):
        await Connection.open(relay, "not-a-relay-token")
