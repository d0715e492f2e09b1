"""Client sockets: TCP (length-prefixed frames) and WebSocket (one binary message
per frame). Both hand decoded frames to ``ConnectorCore.on_frame``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from im.protocol import HEADER, FrameDecoder, ProtocolError, parse_frame
from im.v1 import wire_pb2
from services.connector.service import Conn, ConnectorCore

log = logging.getLogger("im.connector.transport")

# A client that does not read what we send is cut off rather than allowed to grow
# the connector's memory; it syncs when it comes back.
MAX_WRITE_BUFFER = 4 * 1024 * 1024
# Frames one connection may have handled before the others get a turn.
FRAMES_PER_TURN = 64


class TcpConn(Conn):
    __slots__ = ("transport",)

    def __init__(self, conn_id: int, now: float, transport: asyncio.Transport) -> None:
        super().__init__(conn_id, now)
        self.transport = transport

    def _write(self, payload: bytes) -> None:
        self._send(HEADER.pack(len(payload)) + payload)

    def write_framed(self, payload: bytes, framed: bytes) -> None:
        if not self.closed:
            self._send(framed)

    def _send(self, data: bytes) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("closing connection %s: client is not reading", self.conn_id)
            self.closed = True
            transport.abort()

    def _close(self) -> None:
        self.transport.close()  # flushes what is buffered, then closes


class TcpProtocol(asyncio.Protocol):
    """One per TCP connection; no task per connection, frames handled as they arrive.

    At most FRAMES_PER_TURN frames are handled per event-loop turn: if a read brought
    more, the socket stops reading and the rest is handled on the next turns, after
    the other connections had theirs."""

    __slots__ = ("_conn", "_core", "_decoder", "_paused", "_transport")

    def __init__(self, core: ConnectorCore) -> None:
        self._core = core
        self._decoder = FrameDecoder(core.settings.max_frame_bytes)
        self._conn: TcpConn | None = None
        self._transport: asyncio.Transport | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        core = self._core
        self._transport = transport  # type: ignore[assignment]
        # uvloop's transports do not subclass asyncio.Transport but behave like one.
        self._conn = TcpConn(core.new_conn_id(), core.clock.monotonic(), transport)  # type: ignore[arg-type]
        core.opened(self._conn)

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            return
        self._decoder.push(data)
        if not self._paused:
            self._handle_some()

    def _handle_some(self) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            return
        try:
            frames = self._decoder.take(FRAMES_PER_TURN)
        except ProtocolError as exc:
            self._core.protocol_error(conn, exc.code, exc.message)
            return
        on_frame = self._core.on_frame
        for frame in frames:
            on_frame(conn, frame)
        transport = self._transport
        if transport is None or conn.closed:
            return
        if self._decoder.has_frame():
            if not self._paused:
                self._paused = True
                transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._handle_some)
        elif self._paused:
            self._paused = False
            transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._core.closed(self._conn)
            self._conn = None
        self._transport = None


class WsConn(Conn):
    __slots__ = ("outbox", "ws")

    def __init__(self, conn_id: int, now: float, ws: ServerConnection) -> None:
        super().__init__(conn_id, now)
        self.ws = ws
        # websockets' send() is a coroutine; a queue keeps writes ordered and lets the
        # core write synchronously. None marks "close after flushing".
        self.outbox: asyncio.Queue[bytes | None] = asyncio.Queue()

    def _write(self, payload: bytes) -> None:
        if self.outbox.qsize() > 10_000:
            self.closed = True
            self.outbox.put_nowait(None)
            return
        self.outbox.put_nowait(payload)

    def _close(self) -> None:
        self.outbox.put_nowait(None)


async def _ws_writer(conn: WsConn) -> None:
    ws = conn.ws
    try:
        while True:
            payload = await conn.outbox.get()
            if payload is None:
                break
            await ws.send(payload)
    except ConnectionClosed:
        pass
    finally:
        with contextlib.suppress(Exception):
            await ws.close()


def ws_handler(core: ConnectorCore):  # type: ignore[no-untyped-def]
    async def handle(ws: ServerConnection) -> None:
        conn = WsConn(core.new_conn_id(), core.clock.monotonic(), ws)
        core.opened(conn)
        writer = asyncio.get_running_loop().create_task(_ws_writer(conn))
        handled = 0
        try:
            async for message in ws:
                if conn.closed:
                    break
                handled += 1
                if handled % FRAMES_PER_TURN == 0:
                    # Buffered messages come back without suspending: give the other
                    # connections their turn.
                    await asyncio.sleep(0)
                if isinstance(message, str):
                    core.protocol_error(
                        conn, wire_pb2.ERROR_CODE_BAD_FRAME, "frames are binary messages"
                    )
                    break
                if len(message) > core.settings.max_frame_bytes:
                    core.protocol_error(
                        conn, wire_pb2.ERROR_CODE_FRAME_TOO_LARGE, "frame exceeds the size limit"
                    )
                    break
                try:
                    frame = parse_frame(message)
                except ProtocolError as exc:
                    core.protocol_error(conn, exc.code, exc.message)
                    break
                core.on_frame(conn, frame)
        except ConnectionClosed:
            pass
        finally:
            core.closed(conn)
            conn.outbox.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 5)

    return handle


async def start_tcp(core: ConnectorCore, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: TcpProtocol(core), host, port, backlog=4096)


async def start_ws(core: ConnectorCore, host: str, port: int):  # type: ignore[no-untyped-def]
    return await serve(
        ws_handler(core),
        host,
        port,
        # Larger than the frame limit so an oversized frame gets an Error frame, not
        # just a close code.
        max_size=core.settings.max_frame_bytes * 4,
        ping_interval=None,  # the application heartbeat decides liveness
        compression=None,
    )
