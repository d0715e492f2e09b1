"""The byte pipes under a ``Connection`` (connection.py): TCP with length-prefixed
frames (docs/protocol.md) or one frame per WebSocket message, either optionally over TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Protocol

from im.client.errors import ConnectionClosed
from im.protocol import FrameDecoder, ProtocolError, encode_payloads, parse_frame
from im.v1 import wire_pb2


class _Link(Protocol):
    async def send(self, payloads: list[bytes]) -> None: ...

    async def recv(self) -> list[wire_pb2.Frame]:
        """The next frame(s); raises ConnectionClosed at the end of the stream."""
        ...

    async def close(self) -> None: ...


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying TLS client context: the system's trusted CAs, or only those in
    ``ca_file`` (a private or development CA). Host names are always checked."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _split_host_port(address: str) -> tuple[str, int]:
    address = address.removeprefix("tcp://").rstrip("/")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)  # "[::1]:7070" -> "::1"


class _TcpLink:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_frame)

    @classmethod
    async def connect(
        cls, address: str, max_frame: int, context: ssl.SSLContext | None = None
    ) -> _TcpLink:
        host, port = _split_host_port(address)
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=host if context is not None else None
        )
        return cls(reader, writer, max_frame)

    async def send(self, payloads: list[bytes]) -> None:
        if self._writer.is_closing():
            raise ConnectionClosed("socket closed")
        self._writer.write(encode_payloads(payloads))  # one write for a batch of frames
        await self._writer.drain()

    async def recv(self) -> list[wire_pb2.Frame]:
        while True:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionClosed("connection closed by the connector")
            frames = self._decoder.feed(data)
            if frames:
                return frames

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


class _WsLink:
    def __init__(self, ws: object) -> None:
        self._ws = ws

    @classmethod
    async def connect(
        cls,
        address: str,
        max_frame: int,
        open_timeout: float,
        context: ssl.SSLContext | None = None,
    ) -> _WsLink:
        from websockets.asyncio.client import connect

        url = address
        if "://" not in url:
            # a bare host:port: the connector's WS path
            url = f"{'wss' if context is not None else 'ws'}://{url.rstrip('/')}/ws"
        if url.startswith("wss://") and context is None:
            context = tls_context()
        ws = await connect(
            url,
            ssl=context if url.startswith("wss://") else None,
            proxy=None,  # the connector is addressed directly; never via an env proxy
            compression=None,  # small protobuf frames: deflate costs more than it saves
            max_size=max_frame,
            ping_interval=None,  # liveness is the application heartbeat
            open_timeout=open_timeout,
        )
        return cls(ws)

    async def send(self, payloads: list[bytes]) -> None:
        from websockets.exceptions import ConnectionClosed as WsClosed

        try:
            for payload in payloads:
                await self._ws.send(payload)  # type: ignore[attr-defined]
        except WsClosed as exc:
            raise ConnectionClosed(f"websocket closed: {exc}") from exc

    async def recv(self) -> list[wire_pb2.Frame]:
        from websockets.exceptions import ConnectionClosed as WsClosed

        try:
            data = await self._ws.recv()  # type: ignore[attr-defined]
        except WsClosed as exc:
            raise ConnectionClosed(f"websocket closed: {exc}") from exc
        if isinstance(data, str):
            raise ProtocolError(wire_pb2.ERROR_CODE_BAD_FRAME, "text message on the websocket")
        return [parse_frame(data)]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()  # type: ignore[attr-defined]
