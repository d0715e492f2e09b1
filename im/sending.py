"""Messages that enter from the server side (REST, the gRPC MessageService, events such
as recalls and edits): the same idempotency record and bus record as a socket Send, so
the router cannot tell the paths apart and a client_msg_id retried over any of them is
stored once, under one msg_id."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from im.clock import Clock
from im.config import Settings
from im.ids import MsgIdGenerator
from im.ports import Backends
from im.v1 import bus_pb2, wire_pb2

# The idempotency record of a Send: (msg_id, server_ts) of its first acceptance.
ACK_RECORD = struct.Struct(">Qq")
MAX_CLIENT_MSG_ID = 64  # characters (the stored column's width)
# The first character of every client_msg_id the server makes up for a message it sends
# in a user's name (a recall, an edit, a group's system event). Those keys share the
# user's key space with the ones clients choose, and a key seen before passes for a
# retry: a client that took an event's key first would make the event skip its checks
# or vanish. So clients may not start a client_msg_id with it.
SERVER_KEY_PREFIX = "~"


def idempotency_key(user_id: int, client_msg_id: str) -> str:
    return f"{user_id}:{client_msg_id}"


def server_client_msg_id(*parts: object) -> str:
    """A client_msg_id of the server's own, e.g. ``~recall:<msg_id>``."""
    return SERVER_KEY_PREFIX + ":".join(str(part) for part in parts)


def client_msg_id_problem(client_msg_id: str) -> str | None:
    """What is wrong with a client_msg_id a client chose, or None."""
    if not 1 <= len(client_msg_id) <= MAX_CLIENT_MSG_ID:
        return f"client_msg_id must be 1..{MAX_CLIENT_MSG_ID} characters"
    if client_msg_id.startswith(SERVER_KEY_PREFIX):
        return f"client_msg_id must not start with {SERVER_KEY_PREFIX!r} (the server's own keys)"
    return None


@dataclass(frozen=True, slots=True)
class Sent:
    msg_id: int
    server_ts: int
    conversation_id: str


class ServerSender:
    """Publishes a message on behalf of ``message.sender_id``; authorization is the
    caller's (the gateway checks membership, roles and windows first)."""

    def __init__(self, settings: Settings, backends: Backends, ids: MsgIdGenerator, clock: Clock):
        self._settings = settings
        self._backends = backends
        self._ids = ids
        self._clock = clock

    async def send(self, message: wire_pb2.Message) -> Sent:
        """``message`` without msg_id, seq and server_ts; client_msg_id set. Returns
        once the bus took it (or, for a client_msg_id seen before, at once with the
        first msg_id). Raises ``BackendUnavailable``/``TimeoutError`` when the
        idempotency store or the bus fails: the caller retries with the same
        client_msg_id."""
        key = idempotency_key(message.sender_id, message.client_msg_id)
        msg_id, server_ts = self._ids.next_id(), self._clock.wall_ms()
        existing = await self._backends.idempotency.claim(
            key, ACK_RECORD.pack(msg_id, server_ts), self._settings.idempotency_ttl_seconds
        )
        if existing is not None:
            # Seen before: publish again under the first msg_id (the first attempt may
            # have failed before reaching the bus); the router stores a msg_id once.
            msg_id, server_ts = ACK_RECORD.unpack(existing)
        stamped = wire_pb2.Message()
        stamped.CopyFrom(message)
        stamped.msg_id, stamped.server_ts, stamped.seq = msg_id, server_ts, 0
        record = bus_pb2.InboundMessage(message=stamped).SerializeToString()
        async with asyncio.timeout(self._settings.publish_timeout):
            await self._backends.bus.publish(
                self._settings.topic_messages, message.conversation_id, record
            )
        return Sent(msg_id, server_ts, message.conversation_id)
