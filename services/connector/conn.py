"""One client connection as the connector core sees it, whatever the socket type, the
frames the connector writes on its own (errors, kicks), and the connector's counts."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from im import logs
from im.v1 import wire_pb2
from services.connector.timers import TokenBucket

E = wire_pb2  # short alias for error codes and frame types
# Every kind of Frame (its oneof), and None for a frame with none set.
FRAME_KINDS: tuple[str | None, ...] = (
    *(f.name for f in wire_pb2.Frame.DESCRIPTOR.oneofs_by_name["kind"].fields),
    None,
)

# Errors after which the stream cannot be trusted or the connection has no purpose.
CLOSE_AFTER = frozenset(
    {
        E.ERROR_CODE_BAD_FRAME,
        E.ERROR_CODE_FRAME_TOO_LARGE,
        E.ERROR_CODE_AUTH_REQUIRED,
        E.ERROR_CODE_AUTH_FAILED,
        E.ERROR_CODE_AUTH_TIMEOUT,
        E.ERROR_CODE_HEARTBEAT_TIMEOUT,
    }
)


@dataclass(slots=True)
class ConnectorStats:
    """What the connector counts (exported by services/connector/metrics.py at scrape
    time). Plain integers and dicts made up front: the frame path only adds."""

    delivered: int = 0  # Deliver frames written to a device (first time)
    receipts: int = 0  # Receipt frames written to a device
    retransmits: int = 0
    gave_up: int = 0
    bad_frames: int = 0  # streams that could not be decoded
    auth_failures: int = 0
    authenticated: int = 0  # AuthOk written
    pongs: int = 0
    errors: int = 0  # Error frames written
    frames_in: dict[str | None, int] = field(default_factory=lambda: dict.fromkeys(FRAME_KINDS, 0))
    kicks: dict[int, int] = field(
        default_factory=lambda: dict.fromkeys(wire_pb2.KickReason.values(), 0)
    )

    def kicked(self, reason: int) -> None:
        reason = reason if reason in self.kicks else E.KICK_REASON_UNSPECIFIED
        self.kicks[reason] += 1


# Counts of connections no core opened (tests that build a Conn by hand).
UNCOUNTED = ConnectorStats()


def frame_payload(**kind) -> bytes:  # type: ignore[no-untyped-def]
    return wire_pb2.Frame(**kind).SerializeToString()


def error_payload(
    code: int, message: str, client_msg_id: str = "", request_id: int = 0, retry_after_ms: int = 0
) -> bytes:
    return wire_pb2.Frame(
        request_id=request_id,
        error=wire_pb2.Error(
            code=code,
            message=message,
            client_msg_id=client_msg_id,
            retry_after_ms=retry_after_ms,
        ),
    ).SerializeToString()


def kick_payload(reason: int, detail: str) -> bytes:
    return frame_payload(kick=wire_pb2.Kick(reason=reason, detail=detail))


class Conn:
    """One client socket. Transports subclass it with ``_write`` and ``_close``, and
    name their ``kind`` (a metrics label)."""

    kind = "other"

    __slots__ = (
        "auth_started",
        "authed",
        "bucket",
        "close_reason",
        "closed",
        "conn_id",
        "created_at",
        "cursor_bucket",
        "device_id",
        "last_seen",
        "log_context",
        "peer",
        "pending",
        "send_queue",
        "send_worker",
        "session_id",
        "stats",
        "unverified",
        "user_id",
        "verify_worker",
    )

    def __init__(self, conn_id: int, now: float) -> None:
        self.conn_id = conn_id
        self.created_at = now
        self.last_seen = now
        self.auth_started = False  # one Auth frame per connection
        self.authed = False  # AuthOk sent and presence recorded
        self.closed = False
        self.peer = ""  # client IP address, set by the transport ("" unknown: not limited)
        # Log fields of everything done for this connection (conn_id; user_id and
        # device_id once authenticated): the transports make it the context of its frames.
        self.log_context: Mapping[str, Any] = logs.with_fields(conn_id=conn_id)
        # WebSocket close code and reason for the close handshake (other transports
        # say it with the last Error frame).
        self.close_reason: tuple[int, str] | None = None
        self.user_id = 0
        self.device_id = ""
        self.session_id = ""
        self.bucket: TokenBucket | None = None  # Send frames
        self.cursor_bucket: TokenBucket | None = None  # new (conversation) cursor reports
        # conversation -> seq -> serialised Deliver frame (bare, length-prefixed)
        self.pending: dict[str, OrderedDict[int, tuple[bytes, bytes]]] = {}
        # (request_id, Send, clock.monotonic() when it arrived)
        self.send_queue: deque[tuple[int, wire_pb2.Send, float]] = deque()
        self.send_worker: asyncio.Task | None = None
        # Acks and reads for conversations whose membership is being looked up:
        # conversation -> [delivered_seq, read_seq, request_id of the latest frame]
        self.unverified: dict[str, list[int]] = {}
        self.verify_worker: asyncio.Task | None = None
        self.stats = UNCOUNTED  # the core's, once it opened the connection

    def queued_bytes(self) -> int:
        """Bytes written but not yet taken by the client's socket (metrics)."""
        return 0

    # Transports implement these two.
    def _write(self, payload: bytes) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def write(self, payload: bytes) -> None:
        if not self.closed:
            self._write(payload)

    def write_framed(self, payload: bytes, framed: bytes) -> None:
        """Write a frame whose length-prefixed form was built once for many sockets
        (a group message); transports without the prefix use ``payload``."""
        if not self.closed:
            self._write(payload)

    def close(self, last_payload: bytes | None = None) -> None:
        """Write a last frame (Error or Kick), then close once it is flushed."""
        if self.closed:
            return
        if last_payload is not None:
            self._write(last_payload)
        self.closed = True
        self._close()

    def close_with_reason(self, code: int, message: str, ws_close_code: int) -> None:
        """Refuse or end the connection: an Error frame, and on WebSocket a close
        handshake that carries the same reason."""
        if self.closed:
            return
        self.stats.errors += 1
        self.close_reason = (ws_close_code, message)
        self.close(error_payload(code, message))

    def fail(
        self,
        code: int,
        message: str,
        client_msg_id: str = "",
        request_id: int = 0,
        retry_after_ms: int = 0,
    ) -> None:
        """Answer with an Error frame; close after the codes that end a connection."""
        if self.closed:
            return
        self.stats.errors += 1
        payload = error_payload(code, message, client_msg_id, request_id, retry_after_ms)
        if code in CLOSE_AFTER:
            self.close(payload)
        else:
            self.write(payload)

    def pending_count(self) -> int:
        return sum(len(p) for p in self.pending.values())
