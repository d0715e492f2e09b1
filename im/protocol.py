"""Wire framing: 4-byte big-endian length + one encoded ``Frame`` (TCP), and the
``im.v1.json`` WebSocket encoding (one ``Frame`` per text message, in protobuf's
canonical JSON mapping).

``FrameDecoder`` is fed whatever bytes a read returned (partial frames, several
frames at once) and yields complete ``Frame`` messages. It raises ``ProtocolError``
for a frame over the size limit or bytes that are not a Frame; after that the stream
cannot be trusted and the connection is closed.
"""

from __future__ import annotations

import json
import struct

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from im.v1 import wire_pb2

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 65536
# WebSocket subprotocol of text frames in the canonical JSON mapping (for browsers,
# which then need no protobuf library); without it WebSocket frames are binary.
JSON_SUBPROTOCOL = "im.v1.json"


class ProtocolError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_frame(frame: wire_pb2.Frame) -> bytes:
    """Length-prefixed bytes of one frame, for TCP."""
    payload = frame.SerializeToString()
    return HEADER.pack(len(payload)) + payload


def encode_payloads(payloads: list[bytes]) -> bytes:
    """Several already-serialised frames as one TCP write."""
    return b"".join(HEADER.pack(len(p)) + p for p in payloads)


def parse_frame(payload: bytes) -> wire_pb2.Frame:
    """Decode one frame body (a WebSocket message, or a TCP frame without its header)."""
    frame = wire_pb2.Frame()
    try:
        frame.ParseFromString(payload)
    except (DecodeError, RuntimeWarning) as exc:
        raise ProtocolError(wire_pb2.ERROR_CODE_BAD_FRAME, f"undecodable frame: {exc}") from exc
    if frame.WhichOneof("kind") is None:
        raise ProtocolError(wire_pb2.ERROR_CODE_BAD_FRAME, "frame carries no known kind")
    return frame


def parse_json_frame(text: str, max_frame_bytes: int = DEFAULT_MAX_FRAME) -> wire_pb2.Frame:
    """Decode one ``im.v1.json`` text message. The size limit applies to the decoded
    frame (its protobuf size), so a frame is accepted or refused alike in either
    encoding."""
    frame = wire_pb2.Frame()
    try:
        json_format.Parse(text, frame)
    except Exception as exc:  # ParseError, and whatever a hostile text provokes
        raise ProtocolError(
            wire_pb2.ERROR_CODE_BAD_FRAME, f"not a Frame in JSON: {str(exc)[:200]}"
        ) from exc
    if frame.ByteSize() > max_frame_bytes:
        raise ProtocolError(
            wire_pb2.ERROR_CODE_FRAME_TOO_LARGE,
            f"frame of {frame.ByteSize()} bytes exceeds the limit of {max_frame_bytes}",
        )
    if frame.WhichOneof("kind") is None:
        raise ProtocolError(wire_pb2.ERROR_CODE_BAD_FRAME, "frame carries no known kind")
    return frame


def json_text(payload: bytes) -> str:
    """The ``im.v1.json`` text of one serialised frame (int64 fields as strings, enums
    by name, bytes in base64, fields at their default value left out)."""
    frame = wire_pb2.Frame()
    frame.ParseFromString(payload)
    return json.dumps(json_format.MessageToDict(frame), separators=(",", ":"))


class FrameDecoder:
    """Incremental decoder of a length-prefixed frame stream.

    ``feed`` returns every complete frame at once. A server that must stay fair to
    other connections uses ``push`` then ``take(limit)`` instead, so one read holding
    thousands of small frames is decoded and handled a slice at a time."""

    __slots__ = ("_buf", "_max", "_pos")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the first frame not taken yet
        self._max = max_frame_bytes

    def feed(self, data: bytes) -> list[wire_pb2.Frame]:
        self.push(data)
        return self.take()

    def push(self, data: bytes) -> None:
        self._buf += data

    def take(self, limit: int | None = None) -> list[wire_pb2.Frame]:
        """Up to ``limit`` complete frames (all when None), in stream order."""
        frames: list[wire_pb2.Frame] = []
        buf = self._buf
        pos = self._pos
        end = len(buf)
        while end - pos >= 4 and (limit is None or len(frames) < limit):
            length = self._length_at(pos)
            if end - pos - 4 < length:
                break
            frames.append(parse_frame(bytes(buf[pos + 4 : pos + 4 + length])))
            pos += 4 + length
        self._pos = pos
        # Compact once the consumed head is most of the buffer: one memmove per
        # buffer's worth of frames, not one per slice.
        if pos and pos * 2 >= end:
            del buf[:pos]
            self._pos = 0
        return frames

    def has_frame(self) -> bool:
        """A complete frame (or an oversized header, which take() will refuse) waits."""
        pos, end = self._pos, len(self._buf)
        if end - pos < 4:
            return False
        (length,) = HEADER.unpack_from(self._buf, pos)
        return length > self._max or end - pos - 4 >= length

    def _length_at(self, pos: int) -> int:
        (length,) = HEADER.unpack_from(self._buf, pos)
        if length > self._max:
            raise ProtocolError(
                wire_pb2.ERROR_CODE_FRAME_TOO_LARGE,
                f"frame of {length} bytes exceeds the limit of {self._max}",
            )
        return length

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos


def error_frame(code: int, message: str, client_msg_id: str = "", request_id: int = 0) -> bytes:
    """A serialised Error frame (without length header)."""
    return wire_pb2.Frame(
        request_id=request_id,
        error=wire_pb2.Error(code=code, message=message, client_msg_id=client_msg_id),
    ).SerializeToString()
