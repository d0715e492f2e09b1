"""The TCP framing codec: length prefix + one Frame, fed arbitrary read sizes."""

from __future__ import annotations

import pytest

from im.protocol import (
    HEADER,
    FrameDecoder,
    ProtocolError,
    encode_frame,
    encode_payloads,
    error_frame,
    parse_frame,
)
from im.v1 import wire_pb2


def send_frame(n: int) -> wire_pb2.Frame:
    return wire_pb2.Frame(
        request_id=n,
        send=wire_pb2.Send(
            client_msg_id=f"c{n}",
            conversation_id="d:1:2",
            content_type="text/plain",
            body=f"hello {n}".encode(),
        ),
    )


def test_a_frame_fed_byte_by_byte_comes_out_once_complete() -> None:
    frame = send_frame(1)
    data = encode_frame(frame)
    decoder = FrameDecoder()
    for i, byte in enumerate(data[:-1]):
        assert decoder.feed(bytes([byte])) == []
        assert decoder.buffered == i + 1
    assert decoder.feed(data[-1:]) == [frame]
    assert decoder.buffered == 0


def test_several_frames_in_one_feed_come_out_in_order() -> None:
    frames = [send_frame(n) for n in range(5)] + [wire_pb2.Frame(ping=wire_pb2.Ping())]
    data = b"".join(encode_frame(f) for f in frames)
    assert FrameDecoder().feed(data) == frames


def test_frames_split_at_every_boundary_decode_the_same() -> None:
    frames = [send_frame(n) for n in range(3)]
    data = b"".join(encode_frame(f) for f in frames)
    for cut in range(len(data) + 1):
        decoder = FrameDecoder()
        assert decoder.feed(data[:cut]) + decoder.feed(data[cut:]) == frames
        assert decoder.buffered == 0


def test_encode_payloads_matches_encode_frame() -> None:
    frames = [send_frame(1), send_frame(2)]
    payloads = [f.SerializeToString() for f in frames]
    assert encode_payloads(payloads) == b"".join(encode_frame(f) for f in frames)


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    frame = send_frame(7)
    size = frame.ByteSize()
    assert FrameDecoder(max_frame_bytes=size).feed(encode_frame(frame)) == [frame]


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    # Only the header: the decoder must not wait (and buffer) for a huge payload.
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(HEADER.pack(1025))
    assert caught.value.code == wire_pb2.ERROR_CODE_FRAME_TOO_LARGE


def test_garbage_payload_is_a_bad_frame() -> None:
    garbage = b"\xff\xff\xff\xff\xff\xff"
    with pytest.raises(ProtocolError) as caught:
        FrameDecoder().feed(HEADER.pack(len(garbage)) + garbage)
    assert caught.value.code == wire_pb2.ERROR_CODE_BAD_FRAME


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # zero-length frame
        wire_pb2.Frame(request_id=9).SerializeToString(),  # no kind set
    ],
)
def test_frame_without_a_kind_is_a_bad_frame(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        FrameDecoder().feed(HEADER.pack(len(payload)) + payload)
    assert caught.value.code == wire_pb2.ERROR_CODE_BAD_FRAME


def test_parse_frame_and_error_frame_round_trip() -> None:
    frame = parse_frame(error_frame(wire_pb2.ERROR_CODE_RATE_LIMITED, "slow down", "c1", 4))
    assert frame.request_id == 4
    assert frame.WhichOneof("kind") == "error"
    assert frame.error.code == wire_pb2.ERROR_CODE_RATE_LIMITED
    assert (frame.error.message, frame.error.client_msg_id) == ("slow down", "c1")
