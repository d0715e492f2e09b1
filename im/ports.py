"""The narrow interfaces between the services and their backends.

Services depend on these, never on a client library. Standalone mode plugs in the
in-process adapters of ``im.adapters.memory`` (and SQL for the message store);
distributed mode plugs in Kafka, ZooKeeper, Redis and MongoDB adapters.

Every call may raise ``BackendUnavailable`` (and only that, for a backend that is
down, hung past its timeout, or restarting); adapters never let their client
library's own errors through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Set
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from im.v1 import wire_pb2


class BackendUnavailable(Exception):
    """A backend as a whole did not answer: unreachable, timed out, restarting.

    Adapters raise this instead of their client library's errors, so callers can tell
    "try again later" (rewind a batch, answer a Send with UNAVAILABLE) from a fault of
    the record or request at hand. The original error is the ``__cause__``.
    """

    def __init__(self, backend: str, detail: str = "") -> None:
        super().__init__(f"{backend} is unavailable" + (f": {detail}" if detail else ""))
        self.backend = backend


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

    def lag(self) -> dict[tuple[str, int], int]:
        """Records on the bus not yet handed out by poll, per assigned (topic, partition),
        as of the last look (Kafka: every few seconds, from its fetches; no call to the
        broker from here). For metrics."""
        ...

    @property
    def assigned(self) -> int:
        """Partitions this member holds now: 0 before its first assignment, during a
        rebalance, and for good in a group with more members than partitions."""
        ...

    async def close(self) -> None: ...


class Bus(Protocol):
    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Returns once the bus durably accepted the record (Kafka: acks=all)."""
        ...

    async def publish_many(self, topic: str, records: list[tuple[str, bytes]]) -> None: ...

    async def publish_packed(
        self, topic: str, records: list[tuple[str, bytes]], pack: Callable[[list[bytes]], bytes]
    ) -> None:
        """Like publish_many, but the records bound for one partition travel as one:
        their values, in order, packed by ``pack`` into one record under the first
        one's key (a lone record goes as it is). Consumers unpack."""
        ...

    def consumer(self, topics: list[str], group: str, background: bool = False) -> BusConsumer:
        """A member of ``group``. ``background``: latency does not matter (the bus may
        batch longer and poll less)."""
        ...

    async def healthy(self) -> bool:
        """Reachable, and its topics as the settings say (a topic with another
        partition count is unhealthy, never silently used)."""
        ...

    async def producer_ready(self) -> bool:
        """This process can publish: its producer is in place (created now if it was
        never made or was dropped as broken), within a short timeout."""
        ...

    @property
    def epoch(self) -> int:
        """Changes when the bus may have lost records it had acknowledged (the broker
        came back without its topics). Publishers that keep their recent records
        publish them again then; consumers recognise the replays."""
        ...

    async def close(self) -> None: ...


# ----------------------------------------------------------------- message store


class MessageStore(Protocol):
    async def insert_many(self, messages: list[wire_pb2.Message]) -> None:
        """Insert sequenced messages in list order, stopping at the first one that
        cannot be stored: the messages before it are stored and none after it.

        Returns once the writes are durable (SQL: committed; MongoDB: acknowledged
        with the store's write concern, majority and journaled unless the URL says
        otherwise).

        Raises, with the index of the message it stopped at: ``AlreadyStored`` when a
        message with the same msg_id is stored (a replay: the stored copy stands,
        whatever its seq), ``SeqConflict`` when a different message already holds
        (conversation_id, seq), ``RecordRejected`` when the store refuses one message
        by itself (a value it cannot hold). Raises ``BackendUnavailable`` when the
        store cannot be reached; then any prefix of the list may be stored.
        """
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

    async def apply_events(self, events: list[wire_pb2.Message]) -> list[int]:
        """Apply stored recall and edit events (content types of ``im.events``, in seq
        order) to the messages they refer to, as ``im.adapters.event_plan`` says: a
        recalled message keeps its row (and seq) with ``recalled`` set and its body and
        attachments erased; an edited one gets the new body and ``edited_at``.

        Idempotent: the same events applied again change nothing more. Returns the
        msg_ids of the events that changed nothing because their target is missing,
        in another conversation or itself an event. Raises ``BackendUnavailable``
        when the store cannot be reached (then any prefix may be applied)."""
        ...

    async def search(
        self, scope: dict[str, int], terms: list[str], before_msg_id: int, limit: int
    ) -> list[wire_pb2.Message]:
        """Text messages (``im.search.searchable``) of the conversations in ``scope``
        (conversation_id -> the seq after which the reader may see them: its
        joined_seq) with seq > that, whose body holds every one of ``terms`` (words
        made by ``im.search.parse_query``) as a whole word, case- and accent-
        insensitively; only msg_id < ``before_msg_id`` when it is not 0; newest
        (highest msg_id) first, at most ``limit``.

        The index follows updates of a stored body: a body erased or changed in place
        no longer matches what it no longer holds. Recalled messages never match.
        """
        ...

    async def erase_sender(self, sender_id: int) -> int:
        """Erase the bodies of every stored message of ``sender_id`` (an admin deleted
        the account with erase): body and attachment ids empty (their files are no
        longer shared), content type ``im.events.ERASED``; ids, seqs and timestamps
        stay, so histories keep no gap. Returns how many messages were erased now
        (those erased before are not counted again). Safe to repeat."""
        ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...


@runtime_checkable
class ActivityStore(Protocol):
    """Both message store adapters implement it next to the messages: what the
    conversation list is ordered by."""

    async def last_activity(self, conversation_ids: list[str]) -> dict[str, tuple[int, int]]:
        """Per conversation, (seq, server_ts) of its newest stored message; (0, 0) for
        none."""
        ...


class AlreadyStored(Exception):
    """``messages[index]`` of an insert_many: its msg_id is stored already (a replay).
    The messages before it are stored."""

    def __init__(self, msg_id: int, index: int) -> None:
        super().__init__(f"msg_id {msg_id} is stored already")
        self.msg_id = msg_id
        self.index = index


class SeqConflict(Exception):
    """``messages[index]`` of an insert_many: its seq is held by another message."""

    def __init__(self, conversation_id: str, seq: int, index: int = -1) -> None:
        super().__init__(f"seq {seq} of {conversation_id} is taken by another message")
        self.conversation_id = conversation_id
        self.seq = seq
        self.index = index


class RecordRejected(Exception):
    """``messages[index]`` of an insert_many cannot be stored, whatever is retried (a
    field the store cannot hold). The messages before it are stored."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"message {index} of the batch was rejected: {reason}")
        self.index = index
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A bus record the router set aside instead of applying, with the reason.

    ``letter_id`` is derived from where the record was and what it held, so the same
    record seen again after a rewind is stored once."""

    letter_id: str
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    reason: str
    at_ms: int


class DeadLetterStore(Protocol):
    """Where set-aside records are kept for an operator (``imctl dead-letters``).
    Both message store adapters implement it next to the messages."""

    async def put_dead_letters(self, letters: list[DeadLetter]) -> None:
        """Store them durably; a letter_id already stored is left as it is. Raises
        ``BackendUnavailable`` when the store cannot be reached."""
        ...

    async def dead_letters(self, limit: int, before_ms: int | None = None) -> list[DeadLetter]:
        """The newest first (by at_ms, then letter_id), at most ``limit``, only those
        older than ``before_ms`` when given."""
        ...


# ------------------------------------------------------------------ attachments


@dataclass(frozen=True, slots=True)
class AttachmentMeta:
    """An uploaded file as the store keeps it (``im.attachments`` has the shape rules)."""

    attachment_id: str
    owner_id: int
    filename: str
    content_type: str
    size: int
    sha256: str  # hex
    created_ms: int


@dataclass(frozen=True, slots=True)
class AttachmentLink:
    """A stored message of ``sender_id`` at (conversation_id, seq) refers to the
    attachment. It counts only when the sender owns the attachment."""

    attachment_id: str
    conversation_id: str
    seq: int
    sender_id: int


class AttachmentStore(Protocol):
    """Files uploaded for messages, their metadata, and the conversations they were
    sent to (which decide who else may read them). Every call may raise
    ``BackendUnavailable``."""

    async def put(
        self,
        attachment_id: str,
        owner_id: int,
        filename: str,
        content_type: str,
        chunks: AsyncIterator[bytes],
        max_bytes: int,
        now_ms: int,
    ) -> AttachmentMeta:
        """Store the chunks as a new attachment, streaming (never the whole file in
        memory); returns it with its size and sha256. Raises
        ``im.attachments.AttachmentTooLarge`` past ``max_bytes``; on any failure
        nothing of it stays stored."""
        ...

    async def meta(self, attachment_id: str) -> AttachmentMeta | None: ...

    async def usage(self, owner_id: int) -> int:
        """Bytes of the whole attachments ``owner_id`` stored (for a quota)."""
        ...

    def read(self, attachment_id: str) -> AsyncIterator[bytes]:
        """The stored bytes, in chunks (an attachment ``meta`` found)."""
        ...

    async def link(self, links: list[AttachmentLink]) -> int:
        """Record each link whose sender owns the attachment (others are ignored: a
        message cannot share someone else's file); per (attachment, conversation)
        the highest seq is kept. Idempotent. Returns how many links counted."""
        ...

    async def links(self, attachment_id: str, limit: int) -> dict[str, int]:
        """conversation_id -> highest linked seq, at most ``limit`` conversations."""
        ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...


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
    tls: bool = False  # the client ports (tcp, ws) speak TLS
    grpc_host: str = ""  # internal gRPC host when not `host` (internal/public bind split)

    @property
    def grpc_addr(self) -> str:
        return f"{self.grpc_host or self.host}:{self.grpc_port}"


class NodeLease:
    """A node id (0..limit-1) that no other live process of the suite holds: msg ids
    and group ids embed it, so two processes never mint the same id.

    The registry may have to move the lease (the ZooKeeper session that held it was
    lost and another process took the id meanwhile): it then sets ``node_id`` and
    calls the listeners.
    """

    def __init__(self, node_id: int, owner: str) -> None:
        self.node_id = node_id
        self.owner = owner
        self._listeners: list[Callable[[int], None]] = []

    def on_change(self, listener: Callable[[int], None]) -> None:
        self._listeners.append(listener)

    def move_to(self, node_id: int) -> None:
        self.node_id = node_id
        for listener in self._listeners:
            listener(node_id)


class Registry(Protocol):
    """Live connectors (with their addresses and load), live routers (whether they
    serve), and node-id leases. Every entry lives as long as the process that wrote it
    (ZooKeeper: ephemeral nodes of its session, re-created after a session loss)."""

    async def register(self, info: ConnectorInfo) -> None: ...

    async def update(self, info: ConnectorInfo) -> None:
        """Refresh this connector's entry (its live connection count)."""
        ...

    async def deregister(self, connector_id: str) -> None: ...

    async def connectors(self) -> list[ConnectorInfo]:
        """Live connectors."""
        ...

    async def announce_router(self, router_id: str, serving: bool) -> None:
        """Create or update this router's entry (serving: its batches go through)."""
        ...

    async def withdraw_router(self, router_id: str) -> None: ...

    async def routers(self) -> dict[str, bool]:
        """Live routers: router id -> serving. From a watched cache, no round trip."""
        ...

    async def lease_node_id(self, owner: str, limit: int) -> NodeLease:
        """Take the lowest node id in [0, limit) that no live process holds. Raises
        RuntimeError when all are taken. Released by close()."""
        ...

    def healthy(self) -> bool:
        """This process holds a live registry session: its entries are visible to the
        others (a connector without one must not be handed out)."""
        ...

    async def close(self) -> None:
        """Release this process's entries and leases; returns within a few seconds
        even when the registry is unreachable."""
        ...


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
        """Re-assert that these (user, device) are online at connector_id: extend its
        entries, and write again the ones that are missing or expired (a restarted
        store lost them); a live entry of another connector (the device moved) stays."""
        ...

    async def healthy(self) -> bool:
        """Answers now (within a short timeout)."""
        ...

    async def instance(self) -> str:
        """Names the store's current incarnation: it changes when the store restarted
        (and may have forgotten every entry), so holders know to re-assert theirs."""
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

    async def claim_many(self, items: list[tuple[str, bytes]], ttl: float) -> list[bytes | None]:
        """``claim`` for each (key, value), in order, in one round trip where the store
        can; raises for the call as a whole (then any prefix may be claimed)."""
        ...

    async def release(self, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """How failures of one key are punished: ``allowed`` failures are free; each one
    after that makes the key wait ``base * 2**(n - 1)`` seconds (n: failures over the
    allowance), at most ``cap``. The count is forgotten ``window`` seconds after the
    last failure's wait ended."""

    allowed: int
    window: float
    base: float
    cap: float

    def wait_after(self, failures: int) -> float:
        over = failures - self.allowed
        if over <= 0:
            return 0.0
        # min() before the power would overflow a float for a long-running attack.
        return min(self.cap, self.base * 2.0 ** min(over - 1, 64))


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window: float) -> float:
        """Count one event for key in a fixed window of ``window`` seconds. Returns 0 if
        allowed, else the seconds until the window resets (for Retry-After)."""
        ...

    async def blocked(self, keys: list[str]) -> float:
        """Seconds until every one of ``keys`` may try again (the longest backoff of
        them), 0 if none waits. Counts nothing."""
        ...

    async def fail(self, key: str, backoff: Backoff) -> float:
        """Count one failure for key, atomically; returns the wait it now imposes
        (0 while within the allowance)."""
        ...

    async def forgive(self, key: str) -> None:
        """Forget key's failures and wait (a success)."""
        ...


# ------------------------------------------------------------------ push


@dataclass(frozen=True, slots=True)
class PushNotification:
    """A stored message for a member none of whose devices is online: what a push
    gateway (APNs, FCM, via the operator's relay) needs to wake the app."""

    user_id: int
    conversation_id: str
    msg_id: int
    seq: int
    sender_id: int
    content_type: str
    server_ts: int
    preview: str | None = None  # None unless previews are enabled (privacy)


@dataclass(slots=True)
class PushStats:
    queued: int = 0  # taken into the outgoing queue
    sent: int = 0  # accepted by the receiver (2xx)
    failed: int = 0  # given up on: refused (4xx) or retries exhausted
    dropped: int = 0  # the queue was full
    withdrawn: int = 0  # taken back before they were sent: their message was recalled


class PushNotifier(Protocol):
    """Hands notifications to a push gateway in the background. ``offer`` never
    blocks nor waits for the network: what does not fit in its bounded queue is
    dropped and counted."""

    stats: PushStats

    def offer(self, notifications: list[PushNotification]) -> int:
        """Queue these; returns how many were taken (the rest was dropped)."""
        ...

    def withdraw(self, messages: Set[tuple[str, int]]) -> None:
        """These (conversation_id, msg_id) were recalled: drop their notifications
        that have not been sent yet (a preview would show the recalled text)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Stop; what is still queued gets a short last chance, then is dropped."""
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
