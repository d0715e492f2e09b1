"""Connector limits over real sockets: a client that does not read is closed with a
reason once its outbox passes max_outbox_bytes (TCP and WebSocket) while a normal
client keeps receiving; unauthenticated sockets are capped per address, TCP and
WebSocket counted together."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from im.adapters.memory import MemoryBus, MemoryKV, MemoryRegistry
from im.auth import TokenIssuer
from im.clock import FakeClock
from im.config import Settings
from im.metrics import MetricsRegistry
from im.ports import Backends
from im.protocol import HEADER, encode_frame
from im.v1 import connector_pb2, wire_pb2
from services.connector import metrics as connector_metrics
from services.connector.limits import REFUSED_MESSAGE
from services.connector.service import ConnectorCore
from services.connector.transport import TcpConn, WsConn, start_tcp, start_ws
from tests.services.connector.helpers import AllowList

E = wire_pb2
OUTBOX = 256 * 1024
CAP = 2
BODY = b"x" * 32 * 1024
MAX_DELIVERIES = 3000  # far more than a non-reading client's socket buffers hold


@dataclass
class Server:
    core: ConnectorCore
    issuer: TokenIssuer
    tcp_port: int
    ws_port: int

    def token(self, user: int, device: str) -> str:
        return self.issuer.issue(user, device)[0]


@pytest.fixture
async def server(keys, tmp_path) -> AsyncIterator[Server]:
    settings = Settings(
        data_dir=tmp_path, max_outbox_bytes=OUTBOX, max_unauthenticated_per_address=CAP
    )
    kv = MemoryKV(FakeClock())
    backends = Backends(MemoryBus(2), MemoryRegistry(), kv, kv, kv, kv)
    core = ConnectorCore(
        settings, backends, keys[1], clock=FakeClock(), authorizer=AllowList(set())
    )
    tcp = await start_tcp(core, "127.0.0.1", 0)
    ws = await start_ws(core, "127.0.0.1", 0)
    ports = (tcp.sockets[0].getsockname()[1], ws.sockets[0].getsockname()[1])
    try:
        yield Server(core, keys[0], *ports)
    finally:
        core.drain()
        tcp.close()
        ws.close()
        await ws.wait_closed()


async def eventually(condition: Callable[[], bool], what: str, within: float = 10) -> None:
    """Wait for something the event loop has to do first (never to prove it did not)."""
    deadline = asyncio.get_running_loop().time() + within
    # Socket and core state: nothing signals a change, so poll it.
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not within {within} s: {what}")
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------ clients


class TcpClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1", rcvbuf: int = 0) -> TcpClient:
        sock = socket.socket()
        if rcvbuf:  # set before connecting: it caps the window the server may fill
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(*await asyncio.open_connection(sock=sock))

    async def frame(self) -> wire_pb2.Frame:
        (size,) = HEADER.unpack(await self.reader.readexactly(HEADER.size))
        return wire_pb2.Frame.FromString(await self.reader.readexactly(size))

    async def auth(self, token: str) -> None:
        self.writer.write(encode_frame(wire_pb2.Frame(auth=wire_pb2.Auth(token=token))))
        assert (await self.frame()).WhichOneof("kind") == "auth_ok"

    async def frames_until_eof(self) -> list[wire_pb2.Frame]:
        frames = []
        while True:
            try:
                frames.append(await self.frame())
            except (asyncio.IncompleteReadError, ConnectionResetError):
                return frames

    def close(self) -> None:
        self.writer.close()


async def ws_open(port: int, source: str = "127.0.0.1", max_queue: int = 16) -> ClientConnection:
    return await connect(
        f"ws://127.0.0.1:{port}/ws",
        local_addr=(source, 0),
        max_queue=max_queue,
        max_size=None,
        ping_interval=None,
    )


async def ws_auth(ws: ClientConnection, token: str) -> None:
    await ws.send(wire_pb2.Frame(auth=wire_pb2.Auth(token=token)).SerializeToString())
    assert wire_pb2.Frame.FromString(await ws.recv()).WhichOneof("kind") == "auth_ok"


# -------------------------------------------------------------- slow readers


def big_delivery(seq: int, devices: list[str]) -> connector_pb2.DeliverRequest:
    message = wire_pb2.Message(
        msg_id=10_000 + seq, conversation_id="d:1:2", seq=seq, sender_id=1, body=BODY
    )
    targets = [connector_pb2.DeviceRef(user_id=2, device_id=d) for d in devices]
    return connector_pb2.DeliverRequest(
        deliveries=[connector_pb2.Delivery(message=message, targets=targets)]
    )


def queued(conn: TcpConn | WsConn) -> int:
    if isinstance(conn, TcpConn):
        return conn.transport.get_write_buffer_size()
    return conn.outbox_bytes


async def flood_until_closed(
    server: Server, slow: TcpConn | WsConn, fast_received: Callable[[], int]
) -> tuple[int, int]:
    """Deliver 32 KiB messages to the slow and the fast device until the slow one is
    closed; the fast one reads each before the next. Returns (sent, peak queued)."""
    peak = 0
    for seq in range(1, MAX_DELIVERIES + 1):
        server.core.deliver(big_delivery(seq, ["slow", "fast"]))
        peak = max(peak, queued(slow))
        await eventually(lambda s=seq: fast_received() >= s, "the fast client reads")
        if slow.closed:
            return seq, peak
    raise AssertionError(f"a client that reads nothing was not closed after {MAX_DELIVERIES}")


async def test_a_tcp_client_that_does_not_read_is_closed_with_a_reason(
    server: Server, caplog
) -> None:
    caplog.set_level(logging.WARNING, "im.connector.transport")
    slow = await TcpClient.open(server.tcp_port, rcvbuf=4096)
    await slow.auth(server.token(2, "slow"))
    fast = await TcpClient.open(server.tcp_port)
    await fast.auth(server.token(2, "fast"))
    slow_conn = server.core.by_device[(2, "slow")]
    fast_conn = server.core.by_device[(2, "fast")]
    assert isinstance(slow_conn, TcpConn)
    received = 0

    async def read_fast() -> None:
        nonlocal received
        while True:
            if (await fast.frame()).WhichOneof("kind") == "deliver":
                received += 1

    reader = asyncio.get_running_loop().create_task(read_fast())
    try:
        sent, peak = await flood_until_closed(server, slow_conn, lambda: received)
        # Held in memory: never much more than the limit (one frame past it).
        assert peak <= OUTBOX + len(BODY) + 1024, peak
        # The normal client keeps receiving.
        server.core.deliver(big_delivery(sent + 1, ["slow", "fast"]))
        await eventually(lambda: received == sent + 1, "the fast client still receives")
        assert not fast_conn.closed
    finally:
        reader.cancel()

    # The slow client, reading at last, finds the reason at the end of its stream.
    frames = await asyncio.wait_for(slow.frames_until_eof(), 8)
    last = frames[-1]
    assert last.WhichOneof("kind") == "error", [f.WhichOneof("kind") for f in frames[-3:]]
    assert last.error.code == E.ERROR_CODE_UNAVAILABLE
    assert "not reading" in last.error.message
    # Everything queued before the limit was passed, nothing after.
    assert sum(f.WhichOneof("kind") == "deliver" for f in frames) == sent
    assert "user 2 device 'slow' from 127.0.0.1): the client is not reading" in caplog.text
    slow.close()
    fast.close()


async def test_a_websocket_client_that_does_not_read_is_closed_with_a_reason(
    server: Server, caplog
) -> None:
    caplog.set_level(logging.WARNING, "im.connector.transport")
    # The client library stops reading the socket once max_queue messages wait.
    slow = await ws_open(server.ws_port, max_queue=1)
    await ws_auth(slow, server.token(2, "slow"))
    fast = await ws_open(server.ws_port)
    await ws_auth(fast, server.token(2, "fast"))
    slow_conn = server.core.by_device[(2, "slow")]
    assert isinstance(slow_conn, WsConn)
    received = 0

    async def read_fast() -> None:
        nonlocal received
        async for message in fast:
            if wire_pb2.Frame.FromString(message).WhichOneof("kind") == "deliver":
                received += 1

    reader = asyncio.get_running_loop().create_task(read_fast())
    try:
        sent, peak = await flood_until_closed(server, slow_conn, lambda: received)
        assert peak <= OUTBOX, peak
        server.core.deliver(big_delivery(sent + 1, ["slow", "fast"]))
        await eventually(lambda: received == sent + 1, "the fast client still receives")
    finally:
        reader.cancel()

    got = 0
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(8):
            while True:
                await slow.recv()
                got += 1
    assert got < sent
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1013
    assert "not reading" in closed.value.rcvd.reason
    assert "closing websocket connection" in caplog.text
    await fast.close()


async def test_metrics_show_what_clients_that_do_not_read_hold(server: Server) -> None:
    metrics = MetricsRegistry(process_collectors=False)
    connector_metrics.register(metrics, server.core)

    def sample(name: str, **labels: str) -> float:
        value = metrics.registry.get_sample_value(name, labels)
        assert value is not None, name
        return value

    tcp = await TcpClient.open(server.tcp_port, rcvbuf=4096)
    await tcp.auth(server.token(2, "tcp"))
    ws = await ws_open(server.ws_port, max_queue=1)
    await ws_auth(ws, server.token(2, "ws"))
    assert sample("im_connector_connections", transport="tcp", authed="true") == 1
    assert sample("im_connector_connections", transport="ws", authed="true") == 1
    conns = [server.core.by_device[(2, "tcp")], server.core.by_device[(2, "ws")]]
    for seq in range(1, MAX_DELIVERIES + 1):
        server.core.deliver(big_delivery(seq, ["tcp", "ws"]))
        if all(queued(c) > 0 for c in conns):
            break
        await asyncio.sleep(0)  # the WebSocket writer hands what it can to the socket
    assert not any(c.closed for c in conns)
    assert sample("im_connector_outbox_bytes", transport="tcp") == conns[0].queued_bytes() > 0
    assert sample("im_connector_outbox_bytes", transport="ws") == conns[1].queued_bytes() > 0
    largest = max(c.queued_bytes() for c in conns)
    assert sample("im_connector_outbox_max_bytes") == largest
    tcp.close()
    ws.transport.abort()  # a close handshake would wait for the frames it does not read


# ------------------------------------------------- unauthenticated per address


async def test_unauthenticated_sockets_are_capped_per_address_across_transports(
    server: Server,
) -> None:
    limit = server.core.unauthenticated
    held_tcp = await TcpClient.open(server.tcp_port)
    held_ws = await ws_open(server.ws_port)
    await eventually(lambda: limit.open_from("127.0.0.1") == CAP, "both sockets counted")

    # Over the cap: refused at once, with the reason, on either transport.
    refused_tcp = await TcpClient.open(server.tcp_port)
    frames = await asyncio.wait_for(refused_tcp.frames_until_eof(), 5)
    assert [(f.error.code, f.error.message) for f in frames] == [
        (E.ERROR_CODE_RATE_LIMITED, REFUSED_MESSAGE)
    ]
    refused_ws = await ws_open(server.ws_port)
    error = wire_pb2.Frame.FromString(await refused_ws.recv()).error
    assert error.code == E.ERROR_CODE_RATE_LIMITED
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(refused_ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, REFUSED_MESSAGE)
    assert limit.refused == 2

    # Another address is not affected.
    other = await TcpClient.open(server.tcp_port, source="127.0.0.2")
    await other.auth(server.token(3, "d3"))

    # Authenticating frees a slot for the address.
    await held_tcp.auth(server.token(1, "d1"))
    later = await ws_open(server.ws_port)
    await ws_auth(later, server.token(1, "d2"))
    # And closing one does too.
    await held_ws.close()
    await eventually(lambda: limit.open_from("127.0.0.1") == 0, "closed socket uncounted")
    last = await TcpClient.open(server.tcp_port)
    await last.auth(server.token(4, "d4"))
    assert limit.refused == 2
    for client in (held_tcp, refused_tcp, other, last):
        client.close()
    await later.close()
