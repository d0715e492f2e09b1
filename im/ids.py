"""Message ids, conversation ids, and random tokens people type."""

from __future__ import annotations

import functools
import secrets
import threading
from typing import TYPE_CHECKING

from im.clock import Clock, SystemClock

if TYPE_CHECKING:
    from im.ports import NodeLease

# 2026-01-01T00:00:00Z: keeps the 41-bit millisecond field good for ~69 years.
EPOCH_MS = 1_767_225_600_000
_NODE_BITS = 10
_SEQ_BITS = 12
_MAX_SEQ = (1 << _SEQ_BITS) - 1


NODE_IDS = 1 << _NODE_BITS  # how many processes can mint ids at once


class MsgIdGenerator:
    """Time-ordered 64-bit ids: 41 bits of ms since EPOCH_MS, 10 of node, 12 of sequence.

    Ids are unique across processes only if no two hold the same node id at once:
    services take theirs from a registry lease (``follow``), never from a hash of a
    name (two names can hash alike)."""

    def __init__(self, node_id: int, clock: Clock | None = None) -> None:
        self._check(node_id)
        self._node = node_id
        self._clock = clock or SystemClock()
        self._last_ms = -1
        self._seq = 0
        self._lock = threading.Lock()

    @staticmethod
    def _check(node_id: int) -> None:
        if not 0 <= node_id < NODE_IDS:
            raise ValueError(f"node_id must be in [0, {NODE_IDS})")

    @property
    def node_id(self) -> int:
        return self._node

    def set_node(self, node_id: int) -> None:
        self._check(node_id)
        with self._lock:
            self._node = node_id

    def follow(self, lease: NodeLease) -> None:
        """Use the lease's node id, now and whenever the registry moves it."""
        self.set_node(lease.node_id)
        lease.on_change(self.set_node)

    def next_id(self) -> int:
        with self._lock:
            now = self._clock.wall_ms() - EPOCH_MS
            if now < self._last_ms:
                now = self._last_ms  # clock went back: stay monotonic
            if now == self._last_ms:
                self._seq = (self._seq + 1) & _MAX_SEQ
                if self._seq == 0:
                    now += 1  # sequence exhausted within this ms: borrow the next one
            else:
                self._seq = 0
            self._last_ms = now
            return (now << (_NODE_BITS + _SEQ_BITS)) | (self._node << _SEQ_BITS) | self._seq


DIRECT_PREFIX = "d:"
GROUP_PREFIX = "g:"


def direct_conversation_id(user_a: int, user_b: int) -> str:
    """The deterministic id of the 1:1 conversation between two users."""
    if user_a == user_b:
        raise ValueError("a direct conversation needs two different users")
    low, high = sorted((user_a, user_b))
    return f"{DIRECT_PREFIX}{low}:{high}"


def parse_direct(conversation_id: str) -> tuple[int, int] | None:
    """The two user ids of a direct conversation id, or None if it is not one."""
    if not conversation_id.startswith(DIRECT_PREFIX):
        return None
    parts = conversation_id[len(DIRECT_PREFIX) :].split(":")
    if len(parts) != 2:
        return None
    try:
        low, high = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    if low <= 0 or high <= 0 or low >= high:
        return None
    # Only the canonical spelling: "d:01:2" or "d:+1:2" would alias "d:1:2".
    if conversation_id != f"{DIRECT_PREFIX}{low}:{high}":
        return None
    return low, high


def group_conversation_id(group_id: int) -> str:
    return f"{GROUP_PREFIX}{group_id}"


MAX_CONVERSATION_ID = 64  # "d:<20 digits>:<20 digits>" is the longest valid one


def is_valid_conversation_id(conversation_id: str) -> bool:
    # Long strings are refused before the cache, so a client cannot fill it with them.
    return len(conversation_id) <= MAX_CONVERSATION_ID and _is_valid(conversation_id)


@functools.lru_cache(maxsize=1 << 16)
def _is_valid(conversation_id: str) -> bool:
    """Cached: every message and ack on the hot paths asks, mostly about the same few
    conversations."""
    if parse_direct(conversation_id) is not None:
        return True
    if conversation_id.startswith(GROUP_PREFIX):
        rest = conversation_id[len(GROUP_PREFIX) :]
        return rest.isascii() and rest.isdigit() and len(rest) <= 20
    return False


def typeable_token(nbytes: int) -> str:
    """``secrets.token_urlsafe(nbytes)`` that never starts with "-": an id or secret
    that people paste on a command line (``imctl download ID``, ``imctl group join
    TOKEN``, ``--password P``) would read as an option there (1 draw in 64)."""
    while True:
        token = secrets.token_urlsafe(nbytes)
        if not token.startswith("-"):
            return token
