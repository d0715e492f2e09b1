"""The TCP protocol stays fair: one read full of frames is handled a slice per
event-loop turn, with the socket paused meanwhile."""

from __future__ import annotations

import asyncio

from im.clock import FakeClock
from im.config import Settings
from im.protocol import encode_frame
from im.v1 import wire_pb2
from services.connector.transport import FRAMES_PER_TURN, TcpProtocol


class FakeTransport:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.written: list[bytes] = []

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def close(self) -> None: ...

    def abort(self) -> None: ...


class CountingCore:
    """The part of ConnectorCore the protocol calls, counting frames."""

    def __init__(self, settings) -> None:  # type: ignore[no-untyped-def]
        self.settings = settings
        self.clock = FakeClock()
        self.handled = 0

    def new_conn_id(self) -> int:
        return 1

    def opened(self, conn) -> None: ...  # type: ignore[no-untyped-def]

    def closed(self, conn) -> None: ...  # type: ignore[no-untyped-def]

    def on_frame(self, conn, frame) -> None:  # type: ignore[no-untyped-def]
        self.handled += 1

    def protocol_error(self, conn, code, message) -> None: ...  # type: ignore[no-untyped-def]


async def test_a_burst_of_frames_is_handled_a_slice_per_turn(tmp_path):
    core = CountingCore(Settings(data_dir=tmp_path))
    protocol = TcpProtocol(core)  # type: ignore[arg-type]
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]

    burst = encode_frame(wire_pb2.Frame(ping=wire_pb2.Ping())) * (FRAMES_PER_TURN * 10 + 3)
    protocol.data_received(burst)
    assert core.handled == FRAMES_PER_TURN
    assert transport.paused

    turns = 1
    while core.handled < FRAMES_PER_TURN * 10 + 3:
        await asyncio.sleep(0)  # other connections would run here
        turns += 1
        assert turns < 50
    assert turns == 11
    assert not transport.paused and transport.pauses == 1
