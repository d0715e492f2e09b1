"""The bare relay: the benchmark's baseline server.

A minimal asyncio TCP server speaking just enough of the wire protocol (4-byte
big-endian length + one ``im.v1.Frame``) for the project's client library to drive it
exactly as it drives a connector:

- ``Auth{token}`` is answered with ``AuthOk`` without any check. The token is
  ``relay <user_id> <conversation>[,<conversation>...]``: the conversations this
  connection takes part in (no login, no membership service).
- ``Ping`` -> ``Pong``.
- ``Send`` -> ``SendAck`` to the sender, and the same body as one ``Deliver`` to every
  connection in that conversation, the sender's included (the suite also pushes a
  message back to the sender's own devices, so both servers put the same frames on
  the wire). msg_id and seq are counters in memory.
- ``DeliverAck`` and ``Read`` are ignored.

No authentication, no storage, no bus, no retransmit: the cost of moving frames
between sockets in Python, which is the ceiling the suite is compared with.

``python -m im.bench.relay --port 0`` prints ``relay listening on HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import sys
import time

from im.protocol import HEADER, FrameDecoder, ProtocolError
from im.v1 import wire_pb2

MAX_WRITE_BUFFER = 8 * 1024 * 1024


def relay_token(user_id: int, conversations: list[str]) -> str:
    """The token a client presents to the relay to join ``conversations``."""
    return f"relay {int(user_id)} {','.join(conversations)}"


def parse_relay_token(token: str) -> tuple[int, list[str]]:
    parts = token.split(" ")
    if len(parts) != 3 or parts[0] != "relay":
        raise ValueError(f"not a relay token: {token[:40]!r}")
    return int(parts[1]), [c for c in parts[2].split(",") if c]


class RelayState:
    def __init__(self) -> None:
        self.conversations: dict[str, list[RelayProtocol]] = {}
        self.seqs: dict[str, int] = {}
        self.msg_ids = itertools.count(1)
        self.connections = 0
        self.frames_in = 0
        self.frames_out = 0


class RelayProtocol(asyncio.Protocol):
    def __init__(self, state: RelayState) -> None:
        self.state = state
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.user_id = 0
        self.conversations: list[str] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connections -= 1
        for conv in self.conversations:
            members = self.state.conversations.get(conv)
            if members and self in members:
                members.remove(self)

    def write(self, payload: bytes) -> None:
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return
        transport.write(HEADER.pack(len(payload)) + payload)
        self.state.frames_out += 1
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.closed = True
            transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except ProtocolError:
            if self.transport is not None:
                self.transport.abort()
            return
        state = self.state
        state.frames_in += len(frames)
        for frame in frames:
            kind = frame.WhichOneof("kind")
            if kind == "send":
                self.on_send(frame)
            elif kind == "ping":
                self.write(
                    wire_pb2.Frame(
                        request_id=frame.request_id,
                        pong=wire_pb2.Pong(server_ts=int(time.time() * 1000)),
                    ).SerializeToString()
                )
            elif kind == "auth":
                self.on_auth(frame)
            # deliver_ack, read: nothing to do

    def on_auth(self, frame: wire_pb2.Frame) -> None:
        try:
            self.user_id, self.conversations = parse_relay_token(frame.auth.token)
        except ValueError as exc:
            self.write(
                wire_pb2.Frame(
                    request_id=frame.request_id,
                    error=wire_pb2.Error(code=wire_pb2.ERROR_CODE_AUTH_FAILED, message=str(exc)),
                ).SerializeToString()
            )
            if self.transport is not None:
                self.transport.close()
            return
        for conv in self.conversations:
            self.state.conversations.setdefault(conv, []).append(self)
        self.write(
            wire_pb2.Frame(
                request_id=frame.request_id,
                auth_ok=wire_pb2.AuthOk(
                    user_id=self.user_id,
                    device_id="relay",
                    connector_id="relay",
                    heartbeat_interval_ms=20_000,
                    server_ts=int(time.time() * 1000),
                ),
            ).SerializeToString()
        )

    def on_send(self, frame: wire_pb2.Frame) -> None:
        state = self.state
        send = frame.send
        conv = send.conversation_id
        msg_id = next(state.msg_ids)
        seq = state.seqs.get(conv, 0) + 1
        state.seqs[conv] = seq
        now_ms = int(time.time() * 1000)
        self.write(
            wire_pb2.Frame(
                request_id=frame.request_id,
                send_ack=wire_pb2.SendAck(
                    client_msg_id=send.client_msg_id,
                    msg_id=msg_id,
                    server_ts=now_ms,
                    conversation_id=conv,
                ),
            ).SerializeToString()
        )
        payload = wire_pb2.Frame(
            deliver=wire_pb2.Deliver(
                message=wire_pb2.Message(
                    msg_id=msg_id,
                    conversation_id=conv,
                    seq=seq,
                    sender_id=self.user_id,
                    sender_device="relay",
                    client_msg_id=send.client_msg_id,
                    content_type=send.content_type,
                    body=send.body,
                    server_ts=now_ms,
                )
            )
        ).SerializeToString()
        for member in state.conversations.get(conv, ()):
            member.write(payload)


async def serve(host: str, port: int, ready: asyncio.Future | None = None) -> None:
    loop = asyncio.get_running_loop()
    state = RelayState()
    server = await loop.create_server(lambda: RelayProtocol(state), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()
    print(f"relay listening on {bound[0]}:{bound[1]}", flush=True)
    if ready is not None and not ready.done():
        ready.set_result((bound[0], bound[1]))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m im.bench.relay", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    from im.bench.limits import raise_nofile
    from im.runtime import install_uvloop

    raise_nofile()
    install_uvloop()
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
