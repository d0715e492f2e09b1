"""Connection against a real fake connector, over TCP and over WebSocket."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from im.client import AuthError, Connection, ConnectionClosed, SeenIds, SendError, SendTimeout
from im.protocol import encode_frame
from im.v1 import wire_pb2

if TYPE_CHECKING:  # conftest is not importable by name reliably
    from conftest import FakeIm

CONV = "d:1:2"


@pytest.fixture(params=["tcp", "ws"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


async def open_conn(
    im: FakeIm, transport: str, user_id: int = 1, device: str = "d1", **kwargs: object
) -> Connection:
    address = im.tcp_address if transport == "tcp" else im.ws_address
    return await Connection.open(address, f"tok:{user_id}:{device}", transport, **kwargs)  # type: ignore[arg-type]


def acks(im: FakeIm, user_id: int = 1) -> list[tuple[str, int]]:
    return [
        (f.deliver_ack.conversation_id, f.deliver_ack.seq)
        for f in im.session(user_id).of_kind("deliver_ack")
    ]


def message(seq: int, msg_id: int | None = None, conv: str = CONV) -> wire_pb2.Message:
    return wire_pb2.Message(
        msg_id=msg_id or 5000 + seq,
        conversation_id=conv,
        seq=seq,
        sender_id=2,
        content_type="text/plain",
        body=f"m{seq}".encode(),
    )


async def test_auth_ok(fake_connector: FakeIm, transport: str) -> None:
    fake_connector.heartbeat_ms = 15_000
    async with await open_conn(fake_connector, transport, device="phone") as conn:
        assert (conn.user_id, conn.device_id, conn.connector_id) == (1, "phone", "fake-1")
        assert conn.heartbeat_interval == 15.0
        assert conn.transport == transport
    assert conn.closed and conn.close_reason == "closed by the client"


async def test_auth_failed(fake_connector: FakeIm, transport: str) -> None:
    address = fake_connector.tcp_address if transport == "tcp" else fake_connector.ws_address
    with pytest.raises(AuthError) as info:
        await Connection.open(address, "garbage", transport)  # type: ignore[arg-type]
    assert info.value.code == wire_pb2.ERROR_CODE_AUTH_FAILED
    assert info.value.code_name == "AUTH_FAILED"


async def test_send_gets_ack_and_own_deliver(fake_connector: FakeIm, transport: str) -> None:
    async with await open_conn(fake_connector, transport) as conn:
        ack = await conn.send(CONV, "hello", client_msg_id="c-1")
        assert ack.client_msg_id == "c-1" and ack.conversation_id == CONV and ack.msg_id
        event = await conn.next_event(timeout=2)
        assert isinstance(event, wire_pb2.Message)
        assert (event.msg_id, event.seq, event.body) == (ack.msg_id, 1, b"hello")
        await fake_connector.wait_for(lambda: acks(fake_connector) == [(CONV, 1)])
        assert conn.retransmits == 0


async def test_send_retransmits_same_frame(fake_connector: FakeIm, transport: str) -> None:
    fake_connector.drop_sends = 1
    async with await open_conn(fake_connector, transport) as conn:
        ack = await conn.send(CONV, b"\x00bin", "application/octet-stream", ack_timeout=0.2)
        sends = fake_connector.session().of_kind("send")
        assert len(sends) == 2 and sends[0] == sends[1]  # byte-identical resend
        assert sends[0].send.client_msg_id == ack.client_msg_id
        assert conn.retransmits == 1
        assert len(fake_connector.messages[CONV]) == 1


async def test_send_timeout(fake_connector: FakeIm, transport: str) -> None:
    fake_connector.drop_sends = 10
    async with await open_conn(fake_connector, transport) as conn:
        with pytest.raises(SendTimeout) as info:
            await conn.send(CONV, "x", client_msg_id="c-9", ack_timeout=0.05, attempts=2)
        assert info.value.client_msg_id == "c-9" and info.value.attempts == 2
        await fake_connector.wait_for(lambda: len(fake_connector.session().of_kind("send")) == 2)


async def test_send_error_keeps_connection(fake_connector: FakeIm, transport: str) -> None:
    fake_connector.send_error = wire_pb2.ERROR_CODE_FORBIDDEN
    async with await open_conn(fake_connector, transport) as conn:
        with pytest.raises(SendError) as info:
            await conn.send("g:7", "x", client_msg_id="c-2")
        assert info.value.code_name == "FORBIDDEN" and info.value.client_msg_id == "c-2"
        fake_connector.send_error = None
        assert (await conn.send(CONV, "y")).msg_id
        assert not conn.closed


async def test_a_busy_connector_is_waited_out_then_sent_the_same_frame(
    fake_connector: FakeIm, transport: str
) -> None:
    fake_connector.busy_sends = 2
    async with await open_conn(fake_connector, transport) as conn:
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        conn.sleep = sleep
        ack = await conn.send(CONV, "x", client_msg_id="c-busy")
        assert ack.client_msg_id == "c-busy" and conn.busy_refusals == 2
        assert slept == [0.25, 0.25]  # the retry-after the connector named
        sends = fake_connector.session().of_kind("send")
        assert [f.send.client_msg_id for f in sends] == ["c-busy"] * 3

        fake_connector.busy_sends = 1  # without retries the caller sees the refusal
        with pytest.raises(SendError) as info:
            await conn.send(CONV, "y", busy_retries=0)
        assert info.value.code_name == "BUSY" and info.value.retry_after_ms == 250


async def test_deliver_dedupe_and_reack(fake_connector: FakeIm, transport: str) -> None:
    async with await open_conn(fake_connector, transport) as conn:
        await fake_connector.deliver(message(1), user_id=1)
        await fake_connector.deliver(message(1), user_id=1)  # a connector retransmit
        await fake_connector.deliver(message(2), user_id=1)
        first = await conn.next_event(timeout=2)
        second = await conn.next_event(timeout=2)
        assert [first.seq, second.seq] == [1, 2]  # type: ignore[union-attr]
        with pytest.raises(TimeoutError):
            await conn.next_event(timeout=0.1)
        assert conn.duplicates == 1 and conn.delivered == 3
        # every copy is acked (the connector's resend means our ack was lost)
        await fake_connector.wait_for(
            lambda: acks(fake_connector) and acks(fake_connector)[-1] == (CONV, 2)
        )
        assert all(seq >= 1 for _, seq in acks(fake_connector))


async def test_ack_every_n(fake_connector: FakeIm, transport: str) -> None:
    async with await open_conn(fake_connector, transport, ack_every=3, ack_delay_ms=10_000) as conn:
        for seq in (1, 2):
            await fake_connector.deliver(message(seq), user_id=1)
        await conn.next_event(timeout=2)
        await conn.next_event(timeout=2)
        await asyncio.sleep(0.05)
        assert acks(fake_connector) == []
        await fake_connector.deliver(message(3), user_id=1)
        await fake_connector.wait_for(lambda: acks(fake_connector) == [(CONV, 3)])


async def test_ack_delay(fake_connector: FakeIm, transport: str) -> None:
    async with await open_conn(fake_connector, transport, ack_every=100, ack_delay_ms=50) as conn:
        await fake_connector.deliver(message(1), user_id=1)
        await fake_connector.deliver(message(1, msg_id=9001, conv="g:9"), user_id=1)
        await fake_connector.deliver(message(2), user_id=1)
        for _ in range(3):
            await conn.next_event(timeout=2)
        await fake_connector.wait_for(lambda: len(acks(fake_connector)) == 2)
        assert sorted(acks(fake_connector)) == [(CONV, 2), ("g:9", 1)]  # one per conversation


async def test_manual_ack(fake_connector: FakeIm, transport: str) -> None:
    async with await open_conn(fake_connector, transport, auto_ack=False, ack_delay_ms=0) as conn:
        await fake_connector.deliver(message(1), user_id=1)
        await conn.next_event(timeout=2)
        await asyncio.sleep(0.05)
        assert acks(fake_connector) == []  # not acked until handed over
        await conn.ack(CONV, 1)
        await fake_connector.wait_for(lambda: acks(fake_connector) == [(CONV, 1)])
        await fake_connector.deliver(message(1), user_id=1)  # resend: re-ack at once
        await fake_connector.wait_for(lambda: acks(fake_connector) == [(CONV, 1), (CONV, 1)])


async def test_heartbeat_pings(fake_connector: FakeIm, transport: str) -> None:
    fake_connector.heartbeat_ms = 40
    async with await open_conn(fake_connector, transport) as conn:
        await fake_connector.wait_for(lambda: len(fake_connector.session().of_kind("ping")) >= 2)
        await asyncio.sleep(0.01)
        assert conn.pings >= 2 and conn.last_rtt is not None and not conn.closed


async def test_silent_connector_is_dropped(fake_connector: FakeIm, transport: str) -> None:
    fake_connector.answer_pings = False
    conn = await open_conn(fake_connector, transport, heartbeat_interval=0.03, heartbeat_misses=2)
    reason = await asyncio.wait_for(conn.wait_closed(), 2)
    assert "heartbeat" in reason
    assert await conn.next_event(timeout=1) is None
    await conn.close()


async def test_receipt_kick_and_end_of_stream(fake_connector: FakeIm, transport: str) -> None:
    conn = await open_conn(fake_connector, transport)
    session = fake_connector.session()
    await session.send(
        wire_pb2.Frame(receipt=wire_pb2.Receipt(conversation_id=CONV, reader_id=2, read_seq=4))
    )
    await session.send(
        wire_pb2.Frame(kick=wire_pb2.Kick(reason=wire_pb2.KICK_REASON_DEVICE_LOGGED_IN_ELSEWHERE))
    )
    events = [e async for e in conn.events()]
    assert isinstance(events[0], wire_pb2.Receipt) and events[0].read_seq == 4
    assert isinstance(events[1], wire_pb2.Kick) and len(events) == 2
    assert conn.closed and conn.kick is not None
    assert conn.close_reason == "kicked: DEVICE_LOGGED_IN_ELSEWHERE"
    assert [e async for e in conn.events()] == []  # ended for good
    with pytest.raises(ConnectionClosed):
        await conn.send(CONV, "late")
    await conn.close()


async def test_read_frame(fake_connector: FakeIm, transport: str) -> None:
    async with await open_conn(fake_connector, transport) as conn:
        await conn.read(CONV, 7)
        await fake_connector.wait_for(lambda: bool(fake_connector.session().of_kind("read")))
        assert fake_connector.session().of_kind("read")[0].read.seq == 7


async def test_fatal_error_closes(fake_connector: FakeIm, transport: str) -> None:
    conn = await open_conn(fake_connector, transport)
    await fake_connector.session().send(
        wire_pb2.Frame(
            error=wire_pb2.Error(code=wire_pb2.ERROR_CODE_HEARTBEAT_TIMEOUT, message="silent")
        )
    )
    assert await conn.next_event(timeout=2) is None
    assert conn.error is not None and "HEARTBEAT_TIMEOUT" in (conn.close_reason or "")
    await conn.close()


async def test_server_close_fails_pending_send(fake_connector: FakeIm, transport: str) -> None:
    fake_connector.drop_sends = 1
    conn = await open_conn(fake_connector, transport)
    sending = asyncio.create_task(conn.send(CONV, "x", ack_timeout=5))
    await fake_connector.wait_for(lambda: bool(fake_connector.session().of_kind("send")))
    await fake_connector.session().close()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(sending, 2)
    assert await conn.next_event(timeout=2) is None
    await conn.close()


def test_seen_ids_is_bounded() -> None:
    seen = SeenIds(3)
    assert all(seen.add(i) for i in (1, 2, 3))
    assert not seen.add(2)
    assert seen.add(4) and len(seen) == 3
    assert 1 not in seen and seen.add(1)  # the oldest was forgotten


async def test_frames_in_the_auth_read_are_kept() -> None:
    """A Deliver written together with AuthOk (one TCP segment) must not be lost."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # the Auth frame
        ok = wire_pb2.Frame(auth_ok=wire_pb2.AuthOk(user_id=1, heartbeat_interval_ms=60_000))
        push = wire_pb2.Frame(deliver=wire_pb2.Deliver(message=message(1)))
        writer.write(encode_frame(ok) + encode_frame(push))
        await writer.drain()
        await reader.read(65536)  # hold the connection until the client closes

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, await Connection.open(f"127.0.0.1:{port}", "t") as conn:
        event = await conn.next_event(timeout=2)
        assert isinstance(event, wire_pb2.Message) and event.seq == 1


async def test_unreachable_connector_raises_connection_closed(transport: str) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    address = f"127.0.0.1:{port}" if transport == "tcp" else f"ws://127.0.0.1:{port}/ws"
    with pytest.raises(ConnectionClosed, match="cannot connect"):
        await Connection.open(address, "t", transport, connect_timeout=2)  # type: ignore[arg-type]
