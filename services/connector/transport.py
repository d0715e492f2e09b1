"""Client sockets: TCP (length-prefixed frames) and WebSocket (one binary message
per frame, or one text message per frame in the ``im.v1.json`` subprotocol). All hand
decoded frames to ``ConnectorCore.on_frame``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from ssl import SSLContext

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.typing import Subprotocol

from im import logs
from im.protocol import (
    HEADER,
    JSON_SUBPROTOCOL,
    FrameDecoder,
    ProtocolError,
    json_text,
    parse_frame,
    parse_json_frame,
)
from im.v1 import wire_pb2
from services.connector.conn import error_payload
from services.connector.service import Conn, ConnectorCore

log = logging.getLogger("im.connector.transport")

# A client that does not read what we send is cut off once more than
# settings.max_outbox_bytes wait for it, rather than allowed to grow the connector's
# memory; it syncs when it comes back. A closed socket whose peer does not read even
# the last frames is aborted after CLOSE_GRACE seconds (a socket-level timer, like
# websockets' close_timeout: nothing the core's clock decides).
CLOSE_GRACE = 10.0
# Frames one connection may have handled before the others get a turn.
FRAMES_PER_TURN = 64


def _peer_host(peername: object) -> str:
    """The IP address of a peername tuple ("" when unknown, e.g. a Unix socket)."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return ""


def slow_reader_reason(limit: int) -> str:
    # Short: a WebSocket close reason holds at most 123 bytes.
    return f"not reading: over {limit} bytes queued; reconnect and sync"


class TcpConn(Conn):
    kind = "tcp"
    __slots__ = ("max_outbox", "transport")

    def __init__(
        self, conn_id: int, now: float, transport: asyncio.Transport, max_outbox: int
    ) -> None:
        super().__init__(conn_id, now)
        self.transport = transport
        self.max_outbox = max_outbox

    def _write(self, payload: bytes) -> None:
        self._send(HEADER.pack(len(payload)) + payload)

    def queued_bytes(self) -> int:
        return self.transport.get_write_buffer_size()

    def write_framed(self, payload: bytes, framed: bytes) -> None:
        if not self.closed:
            self._send(framed)

    def _send(self, data: bytes) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(data)
        queued = transport.get_write_buffer_size()
        if queued > self.max_outbox:
            self._overflow(queued)

    def _overflow(self, queued: int) -> None:
        """Close a client that does not read: its reason goes behind what is queued (a
        client that reads again gets it before the end of the stream), and the socket
        is aborted after CLOSE_GRACE if it still does not read."""
        log_slow_reader(self, "tcp", queued, self.max_outbox)
        reason = slow_reader_reason(self.max_outbox)
        payload = error_payload(wire_pb2.ERROR_CODE_UNAVAILABLE, reason)
        self.stats.errors += 1
        self.transport.write(HEADER.pack(len(payload)) + payload)
        self.closed = True
        self._close()

    def _close(self) -> None:
        transport = self.transport
        transport.close()  # flushes what is buffered, then closes
        asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)


def log_slow_reader(conn: Conn, kind: str, queued: int, limit: int) -> None:
    log.warning(
        "closing %s connection %s (user %s device %r from %s): the client is not "
        "reading, %d bytes queued for it (limit %d)",
        kind,
        conn.conn_id,
        conn.user_id,
        conn.device_id,
        conn.peer or "?",
        queued,
        limit,
    )


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
        conn = TcpConn(
            core.new_conn_id(),
            core.clock.monotonic(),
            transport,  # type: ignore[arg-type]
            core.settings.max_outbox_bytes,
        )
        conn.peer = _peer_host(transport.get_extra_info("peername"))
        self._conn = conn
        core.opened(conn)

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
        # The connection's log context for its frames and the tasks they start (one
        # set per read, not per frame).
        token = logs.use(conn.log_context)
        try:
            for frame in frames:
                on_frame(conn, frame)
        finally:
            logs.reset(token)
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


class _JsonTexts:
    """The JSON text of the payload converted last: a group message is one payload
    written to many sockets in a row, so it is converted once, not once per member."""

    __slots__ = ("payload", "text")

    def __init__(self) -> None:
        self.payload: bytes | None = None
        self.text = ""

    def of(self, payload: bytes) -> str:
        if payload is not self.payload:
            self.text = json_text(payload)
            self.payload = payload
        return self.text


_json_texts = _JsonTexts()


class WsConn(Conn):
    kind = "ws"
    __slots__ = ("json", "max_outbox", "outbox", "outbox_bytes", "ws")

    def __init__(
        self, conn_id: int, now: float, ws: ServerConnection, max_outbox: int, json: bool = False
    ) -> None:
        super().__init__(conn_id, now)
        self.ws = ws
        self.max_outbox = max_outbox
        self.json = json  # im.v1.json: text messages both ways
        # websockets' send() is a coroutine; a queue keeps writes ordered and lets the
        # core write synchronously. None marks "close after flushing".
        self.outbox: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self.outbox_bytes = 0  # payload bytes (characters) in the queue, not yet sent

    def queued_bytes(self) -> int:
        # The queue, and what websockets handed to the socket that it did not take yet.
        return self.outbox_bytes + self.ws.transport.get_write_buffer_size()

    def _write(self, payload: bytes) -> None:
        # The core writes serialised frames; a JSON socket gets their text instead.
        message: bytes | str = _json_texts.of(payload) if self.json else payload
        self.outbox_bytes += len(message)
        if self.outbox_bytes > self.max_outbox:
            self._overflow()
            return
        self.outbox.put_nowait(message)

    def _overflow(self) -> None:
        """Close a client that does not read: what is queued is dropped (it syncs on
        reconnect), the close handshake carries the reason, and the socket is aborted
        after CLOSE_GRACE if the client does not read even that far."""
        log_slow_reader(self, "websocket", self.outbox_bytes, self.max_outbox)
        self.closed = True
        while not self.outbox.empty():
            self.outbox.get_nowait()
        self.outbox_bytes = 0
        self.close_reason = (CloseCode.TRY_AGAIN_LATER, slow_reader_reason(self.max_outbox))
        self.outbox.put_nowait(None)
        # The writer may be stuck in send() until the client reads.
        asyncio.get_running_loop().call_later(CLOSE_GRACE, self.ws.transport.abort)

    def _close(self) -> None:
        self.outbox.put_nowait(None)


async def _ws_writer(conn: WsConn) -> None:
    ws = conn.ws
    try:
        while True:
            payload = await conn.outbox.get()
            if payload is None:
                break
            conn.outbox_bytes -= len(payload)
            await ws.send(payload)
    except ConnectionClosed:
        pass
    finally:
        code, reason = conn.close_reason or (CloseCode.NORMAL_CLOSURE, "")
        try:
            # close() waits for the close frame to be written: bounded, as the
            # client may not be reading.
            async with asyncio.timeout(CLOSE_GRACE):
                await ws.close(code, reason)
        except TimeoutError:
            ws.transport.abort()
        except Exception:
            pass


def ws_handler(core: ConnectorCore):  # type: ignore[no-untyped-def]
    max_frame = core.settings.max_frame_bytes

    async def handle(ws: ServerConnection) -> None:
        json_mode = ws.subprotocol == JSON_SUBPROTOCOL
        conn = WsConn(
            core.new_conn_id(),
            core.clock.monotonic(),
            ws,
            core.settings.max_outbox_bytes,
            json=json_mode,
        )
        conn.peer = _peer_host(ws.remote_address)
        core.opened(conn)
        writer = asyncio.get_running_loop().create_task(_ws_writer(conn))
        handled = 0
        # A task per connection: its context is the connection's log context (set again
        # when authentication added the user).
        context = conn.log_context
        logs.use(context)
        try:
            async for message in ws:
                if conn.closed:
                    break
                if context is not conn.log_context:
                    context = conn.log_context
                    logs.use(context)
                handled += 1
                if handled % FRAMES_PER_TURN == 0:
                    # Buffered messages come back without suspending: give the other
                    # connections their turn.
                    await asyncio.sleep(0)
                try:
                    frame = _decode(message, json_mode, max_frame)
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
                # The writer's close is bounded by CLOSE_GRACE.
                await asyncio.wait_for(writer, CLOSE_GRACE + 1)

    return handle


def _decode(message: bytes | str, json_mode: bool, max_frame: int) -> wire_pb2.Frame:
    """One WebSocket message as a Frame: text in the im.v1.json subprotocol, binary
    otherwise; the other kind is a BAD_FRAME."""
    if json_mode:
        if not isinstance(message, str):
            raise ProtocolError(
                wire_pb2.ERROR_CODE_BAD_FRAME, f"frames are text messages on {JSON_SUBPROTOCOL}"
            )
        return parse_json_frame(message, max_frame)
    if isinstance(message, str):
        raise ProtocolError(wire_pb2.ERROR_CODE_BAD_FRAME, "frames are binary messages")
    if len(message) > max_frame:
        raise ProtocolError(wire_pb2.ERROR_CODE_FRAME_TOO_LARGE, "frame exceeds the size limit")
    return parse_frame(message)


def _select_subprotocol(_ws: ServerConnection, offered: Sequence[str]) -> Subprotocol | None:
    """im.v1.json when the client offers it; otherwise no subprotocol, which means
    binary protobuf (a client that offered only others then fails the handshake)."""
    return Subprotocol(JSON_SUBPROTOCOL) if JSON_SUBPROTOCOL in offered else None


def _handshake_timeout(core: ConnectorCore, ssl: SSLContext | None) -> float | None:
    # A TLS handshake is bounded like the Auth that follows it (asyncio's default is
    # 60 s of an idle socket held per attempt).
    return core.settings.auth_timeout if ssl is not None else None


async def start_tcp(
    core: ConnectorCore, host: str, port: int, ssl: SSLContext | None = None
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: TcpProtocol(core),
        host,
        port,
        backlog=4096,
        ssl=ssl,
        ssl_handshake_timeout=_handshake_timeout(core, ssl),
    )


async def start_ws(core: ConnectorCore, host: str, port: int, ssl: SSLContext | None = None):  # type: ignore[no-untyped-def]
    return await serve(
        ws_handler(core),
        host,
        port,
        ssl=ssl,
        ssl_handshake_timeout=_handshake_timeout(core, ssl),
        # Larger than the frame limit so an oversized frame gets an Error frame, not
        # just a close code (JSON text is larger than the frame it decodes to: the
        # limit is checked on the decoded frame).
        max_size=core.settings.max_frame_bytes * 4,
        select_subprotocol=_select_subprotocol,
        ping_interval=None,  # the application heartbeat decides liveness
        compression=None,
    )
