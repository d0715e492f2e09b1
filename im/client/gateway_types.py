"""What the gateway REST client hands back: login answers, pages of history, members
and search hits, posted messages; and REST messages as ``wire_pb2.Message``."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

from im.v1 import wire_pb2

GROUP_PREFIX = "g:"


@dataclass(frozen=True, slots=True)
class ConnectorInfo:
    id: str
    tcp: str  # "host:port"
    ws: str  # "ws://host:port/ws" ("wss://" with TLS)
    tls: bool = False  # both endpoints speak TLS


@dataclass(frozen=True, slots=True)
class LoginResult:
    access_token: str
    token_type: str
    expires_in: int
    user_id: int
    device_id: str
    connector: ConnectorInfo
    heartbeat_interval: float  # seconds
    obtained_at: float  # time.monotonic() when the answer arrived
    refresh_token: str = ""  # for GatewayClient.refresh (empty from an older gateway)
    refresh_expires_in: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoginResult:
        conn = data.get("connector") or {}
        return cls(
            access_token=data["access_token"],
            token_type=data.get("token_type", "Bearer"),
            expires_in=int(data.get("expires_in", 0)),
            user_id=int(data["user_id"]),
            device_id=str(data["device_id"]),
            connector=ConnectorInfo(
                id=str(conn.get("id", "")),
                tcp=str(conn.get("tcp", "")),
                ws=str(conn.get("ws", "")),
                tls=bool(conn.get("tls", False)),
            ),
            heartbeat_interval=float(data.get("heartbeat_interval", 20.0)),
            obtained_at=time.monotonic(),
            refresh_token=str(data.get("refresh_token") or ""),
            refresh_expires_in=int(data.get("refresh_expires_in") or 0),
        )

    def expires_within(self, seconds: float) -> bool:
        """True if the token is (nearly) expired: re-login before connecting with it."""
        if self.expires_in <= 0:
            return False
        return time.monotonic() + seconds >= self.obtained_at + self.expires_in

    def address(self, transport: str) -> str:
        return self.connector.ws if transport == "ws" else self.connector.tcp


@dataclass(frozen=True, slots=True)
class HistoryPage:
    messages: list[wire_pb2.Message]
    has_more: bool


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """What ``post_message`` got back: the message is on the bus; its seq comes with
    its delivery (the sender's own sockets get it too) and in history."""

    msg_id: int
    conversation_id: str
    client_msg_id: str  # send again with it after a timeout or 503: stored once
    server_ts: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PostedMessage:
        return cls(
            msg_id=int(data["msg_id"]),  # a decimal string on REST
            conversation_id=str(data["conversation_id"]),
            client_msg_id=str(data["client_msg_id"]),
            server_ts=int(data["server_ts"]),
        )


@dataclass(frozen=True, slots=True)
class SearchHit:
    message: wire_pb2.Message
    snippet: str  # part of the body around the first match
    highlights: list[tuple[int, int]]  # [start, end) of each matching word in snippet


@dataclass(frozen=True, slots=True)
class SearchPage:
    hits: list[SearchHit]  # newest first
    next_cursor: str | None  # None on the last page


@dataclass(frozen=True, slots=True)
class MemberPage:
    members: list[dict[str, Any]]  # {user_id, role, joined_seq, read_seq, joined_at}
    next_cursor: str | None  # None on the last page


def as_group_id(group: str | int) -> str:
    """A group's conversation id (``"g:7"``) from ``7``, ``"7"`` or ``"g:7"``: a
    group's id is its conversation id, so this is also what to send to."""
    text = str(group).strip()
    return text if text.startswith(GROUP_PREFIX) else f"{GROUP_PREFIX}{text}"


def message_from_json(data: dict[str, Any]) -> wire_pb2.Message:
    """A REST message dict as the wire type (msg_id is a decimal string on REST)."""
    if data.get("body_b64") is not None:
        body = base64.b64decode(data["body_b64"])
    else:
        body = (data.get("text") or "").encode()
    return wire_pb2.Message(
        msg_id=int(data["msg_id"]),
        conversation_id=data["conversation_id"],
        seq=int(data["seq"]),
        sender_id=int(data.get("sender_id") or 0),
        sender_device=data.get("sender_device") or "",
        client_msg_id=data.get("client_msg_id") or "",
        content_type=data.get("content_type") or "",
        body=body,
        server_ts=int(data.get("server_ts") or 0),
        refers_to=int(data.get("refers_to") or 0),
        edited_at=int(data.get("edited_at") or 0),
        recalled=bool(data.get("recalled")),
        attachment_ids=[str(a) for a in data.get("attachment_ids") or []],
    )
