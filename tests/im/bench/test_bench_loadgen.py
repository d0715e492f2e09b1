"""The load generator's sends: a BUSY answer is a refusal, counted once, not retried."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from im.bench.loadgen.messaging import Bitmap, Messaging, is_busy
from im.client.errors import SendError, SendTimeout
from im.protocol import FrameDecoder, encode_frame
from im.v1 import wire_pb2

BUSY = wire_pb2.ERROR_CODE_BUSY


def spec(mode: str = "open", members: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "mode": mode,
        "duration": 1.0,
        "rate": 10.0,
        "window": 2,
        "senders": [{"gid": 1, "conv": "d:1:2"}],
        "members": members or [],
    }


def test_only_a_busy_send_error_is_a_refusal() -> None:
    assert is_busy(SendError(BUSY, "overloaded", "m1"))
    assert not is_busy(SendError(wire_pb2.ERROR_CODE_RATE_LIMITED, "slow down", "m1"))
    assert not is_busy(SendTimeout("m1", 3))
    assert not is_busy(RuntimeError("busy"))


class FakeConnection:
    """Answers each send with the next of ``answers`` (an exception is raised)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.sends = 0
        self.duplicates = self.retransmits = 0

    async def send(self, *args: Any, **kw: Any) -> Any:
        self.sends += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.mark.parametrize("mode", ["open", "burst"])
async def test_refused_sends_are_counted_apart_from_errors(mode: str) -> None:
    m = Messaging(spec(mode))
    conn = FakeConnection(
        SendError(BUSY, "overloaded", "m0"),
        wire_pb2.SendAck(client_msg_id="m1", msg_id=7),
        SendError(wire_pb2.ERROR_CODE_FORBIDDEN, "not a member", "m2"),
    )
    m.conns[1], m.acked[1], m.windows[1] = conn, Bitmap(), asyncio.Semaphore(2)
    window = m.windows[1]
    await window.acquire()  # what the burst loop takes before each send
    await m._send(1, 0)
    if mode == "burst":  # a refused send gives its slot back: no echo will come for it
        for _ in range(2):
            await asyncio.wait_for(window.acquire(), 0.1)
    for n in (1, 2):
        await m._send(1, n)
    assert conn.sends == 3  # the refused one was not sent again
    result = m.result(1.0, 0.0)
    assert (result["sent"], result["refused"]) == (3, 1)
    assert result["errors"] == {"SendError:FORBIDDEN": 1}
    assert 1 in m.acked[1] and 0 not in m.acked[1]


@contextlib.asynccontextmanager
async def busy_connector(frames: list[wire_pb2.Frame]) -> AsyncIterator[str]:
    """A connector that accepts any token and refuses every Send with BUSY."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for frame in decoder.feed(data):
                frames.append(frame)
                kind = frame.WhichOneof("kind")
                if kind == "auth":
                    answer = wire_pb2.Frame(
                        request_id=frame.request_id,
                        auth_ok=wire_pb2.AuthOk(user_id=1, device_id="d", connector_id="c"),
                    )
                elif kind == "send":
                    answer = wire_pb2.Frame(
                        request_id=frame.request_id,
                        error=wire_pb2.Error(
                            code=BUSY,
                            message="overloaded",
                            client_msg_id=frame.send.client_msg_id,
                            retry_after_ms=20,
                        ),
                    )
                else:
                    continue
                writer.write(encode_frame(answer))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        yield f"{host}:{port}"
    finally:
        server.close()


async def test_the_client_library_passes_busy_on_without_sending_again() -> None:
    """Over a real socket with the project's client library: one Send on the wire, one
    refusal counted. The library waits out BUSY and sends again by default; the
    generator turns that off (a retry would happen inside the send it awaits)."""
    frames: list[wire_pb2.Frame] = []
    async with busy_connector(frames) as address:
        m = Messaging(spec(members=[{"gid": 1, "address": address, "token": "t"}]))
        info = await m.setup()
        try:
            assert info["connected"] == 1
            await m._send(1, 0)
        finally:
            await m.close()
    sends = [f for f in frames if f.WhichOneof("kind") == "send"]
    assert len(sends) == 1
    assert m.refused == 1 and not m.errors and not m.acked[1].to_bytes()
