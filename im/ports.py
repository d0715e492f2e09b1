"""The narrow interfaces between the services and their backends.

Services depend on these, never on a client library. Standalone mode plugs in the
in-process adapters of ``im.adapters.memory`` (and SQL for the message store);
distributed mode plugs in Kafka, ZooKeeper, Redis and MongoDB adapters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from im.v1 import wire_pb2

# --------------------------------------------------------------------------- bus


@dataclass(frozen=True, slots=True)
class BusRecord:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes


class BusConsumer(Protocol):
    """One member of a consumer group."""

    async def poll(self, max_records: int, timeout: float) -> list[BusRecord]:
        """Records after this member's position, in partition order. Empty on timeout."""
        ...

    async def commit(self) -> None:
        """Mark everything returned by poll so far as done (call after storing it)."""
        ...

    async def rewind(self) -> None:
        """Go back to the last committed positions (after a failed batch)."""
        ...

    @property
    def generation(self) -> int:
        """Changes whenever this member's partition assignment changes."""
        ...

    async def close(self) -> None: ...


class Bus(Protocol):
    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Returns once the bus durably accepted the record (Kafka: acks=all)."""
        ...

    async def publish_many(self, topic: str, records: list[tuple[str, bytes]]) -> None: ...

    def consumer(self, topics: list[str], group: str, background: bool = False) -> BusConsumer:
        """A member of ``group``. ``background``: latency does not matter (the bus may
        batch longer and poll less)."""
        ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...


# ----------------------------------------------------------------- message store


class MessageStore(Protocol):
    async def insert_many(self, messages: list[wire_pb2.Message]) -> list[bool]:
        """Insert sequenced messages; per message True if stored, False if a message
        with the same msg_id already exists (a replay). Raises SeqConflict when a
        different message already holds (conversation_id, seq)."""
        ...

    async def get_by_msg_ids(self, msg_ids: list[int]) -> dict[int, wire_pb2.Message]: ...

    async def last_seqs(self, conversation_ids: list[str]) -> dict[str, int]:
        """Highest stored seq per conversation (0 for none)."""
        ...

    async def history(
        self, conversation_id: str, after_seq: int, limit: int
    ) -> list[wire_pb2.Message]:
        """Messages with seq > after_seq, ascending, at most limit."""
        ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...


class SeqConflict(Exception):
    def __init__(self, conversation_id: str, seq: int) -> None:
        super().__init__(f"seq {seq} of {conversation_id} is taken by another message")
        self.conversation_id = conversation_id
        self.seq = seq


# -------------------------------------------------------------------- registry


@dataclass(slots=True)
class ConnectorInfo:
    connector_id: str
    host: str
    tcp_port: int
    ws_port: int
    grpc_port: int
    connections: int = 0
    version: str = "1"

    @property
    def grpc_addr(self) -> str:
        return f"{self.host}:{self.grpc_port}"


class Registry(Protocol):
    async def register(self, info: ConnectorInfo) -> None: ...

    async def update(self, info: ConnectorInfo) -> None:
        """Refresh this connector's entry (its live connection count)."""
        ...

    async def deregister(self, connector_id: str) -> None: ...

    async def connectors(self) -> list[ConnectorInfo]:
        """Live connectors."""
        ...

    async def close(self) -> None: ...


# ------------------------------------------------------ presence, sessions, keys


@dataclass(slots=True)
class DeviceRoute:
    device_id: str
    connector_id: str


class Presence(Protocol):
    async def connect(
        self, user_id: int, device_id: str, connector_id: str, ttl: float
    ) -> str | None:
        """Record that the device is online at connector_id; returns the connector it
        was online at before (to kick the older connection), or None."""
        ...

    async def disconnect(self, user_id: int, device_id: str, connector_id: str) -> None:
        """Forget the device, unless it has since connected elsewhere."""
        ...

    async def refresh(self, entries: list[tuple[int, str]], connector_id: str, ttl: float) -> None:
        """Extend the lifetime of these (user, device) entries held by connector_id."""
        ...

    async def routes(self, user_ids: list[int]) -> dict[int, list[DeviceRoute]]:
        """Online devices of each user (users with none are left out)."""
        ...


class SessionStore(Protocol):
    async def revoke(self, session_id: str, ttl: float) -> None: ...

    async def is_revoked(self, session_id: str) -> bool: ...


class IdempotencyStore(Protocol):
    async def claim(self, key: str, value: bytes, ttl: float) -> bytes | None:
        """Store value under key unless present; returns the existing value, or None
        if this call claimed the key."""
        ...

    async def release(self, key: str) -> None: ...


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window: float) -> float:
        """Count one event for key in a fixed window of ``window`` seconds. Returns 0 if
        allowed, else the seconds until the window resets (for Retry-After)."""
        ...


@dataclass(slots=True)
class Backends:
    """Everything a process needs from outside, built once by ``im.adapters.build``."""

    bus: Bus
    registry: Registry
    presence: Presence
    sessions: SessionStore
    idempotency: IdempotencyStore
    rate_limits: RateLimiter
    closers: list = field(default_factory=list)
    starters: list = field(default_factory=list)

    async def start(self) -> None:
        """Connect what needs connecting (create topics, open sessions)."""
        for start in self.starters:
            await start()

    async def close(self) -> None:
        for close in reversed(self.closers):
            await close()
