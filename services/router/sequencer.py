"""Per-conversation seq assignment, replay recognition, msg_id collisions.

One router owns a conversation at a time (the bus is keyed by conversation), so an
in-memory counter seeded from the store is enough; the store's unique index on
(conversation, seq) catches a stale counter after a rebalance, and the counter is
then reseeded. Counters only move past what the store confirmed: any failed or
partial insert forgets the counters of the conversations involved, so the next try
numbers from the store again and no seq is ever skipped.

A msg_id already stored is a replay if the stored message is the same one (same
conversation, sender and client_msg_id); it keeps the seq it was stored with. If it
is another message, two processes minted the same id (which a node-id lease should
prevent): the newcomer gets an id derived from its own identity, so that its own
replays find it again, and is stored under that.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from im.ports import AlreadyStored, MessageStore, RecordRejected, SeqConflict
from im.v1 import wire_pb2

log = logging.getLogger("im.router")

MAX_ROUNDS = 8  # derived ids tried for one colliding message
MAX_CONFLICTS = 5  # seq conflicts in one batch before it is retried as a whole
_LOW_BITS = 22  # node + sequence bits of a msg_id (see im.ids)
# A message to insert, with the msg_id it came with and how many derived ids it tried.
Pending = tuple[wire_pb2.Message, int, int]


@dataclass(slots=True)
class Outcome:
    """What became of a batch of inbound messages."""

    new: list[wire_pb2.Message] = field(default_factory=list)  # stored now, numbered
    replayed: list[wire_pb2.Message] = field(default_factory=list)  # stored copies
    rejected: list[tuple[wire_pb2.Message, str]] = field(default_factory=list)
    collisions: int = 0


def same_message(a: wire_pb2.Message, b: wire_pb2.Message) -> bool:
    return (
        a.conversation_id == b.conversation_id
        and a.sender_id == b.sender_id
        and a.client_msg_id == b.client_msg_id
    )


def derived_id(original: int, m: wire_pb2.Message, attempt: int) -> int:
    """A stand-in msg_id for a message whose id another message holds: the same
    millisecond (ids stay time-ordered), low bits from the message's identity, so a
    replay of it derives the same id and is recognised."""
    identity = f"{m.conversation_id}|{m.sender_id}|{m.client_msg_id}|{attempt}".encode()
    low = int.from_bytes(hashlib.blake2b(identity, digest_size=8).digest(), "big")
    return (original >> _LOW_BITS << _LOW_BITS) | (low & ((1 << _LOW_BITS) - 1))


class Sequencer:
    def __init__(self, store: MessageStore) -> None:
        self._store = store
        self._last: dict[str, int] = {}
        self.conflicts = 0

    def reset(self) -> None:
        """Forget counters (partition assignment changed: another router may have
        written meanwhile)."""
        self._last.clear()

    def last_known(self, conversation_id: str) -> int | None:
        """The highest seq this router knows to be stored (None: not seeded)."""
        return self._last.get(conversation_id)

    async def store(self, messages: list[wire_pb2.Message]) -> Outcome:
        """Number and store a batch of inbound messages (in bus order).

        Raises what the store raises for the store as a whole (BackendUnavailable);
        the counters of the batch's conversations are then forgotten."""
        outcome = Outcome()
        batch = self._unique(messages, outcome)
        try:
            await self._insert(batch, outcome)
        except BaseException:
            self._forget({m.conversation_id for m in messages})
            raise
        return outcome

    # ------------------------------------------------------------- identities

    def _unique(self, messages: list[wire_pb2.Message], outcome: Outcome) -> list[Pending]:
        """(message, original id, attempt) per distinct message: a duplicate within the
        batch counts once; a different message under a taken id is re-identified."""
        first: dict[int, wire_pb2.Message] = {}
        out = []
        for m in messages:
            seen = first.setdefault(m.msg_id, m)
            if seen is m:
                out.append((m, m.msg_id, 0))
            elif not same_message(seen, m):
                out.append(self._reidentify(m, m.msg_id, 0, outcome))
        return out

    async def _resolve_ids(self, batch: list[Pending], outcome: Outcome) -> list[Pending]:
        """Split off replays; give messages whose id another message holds a derived
        id. Returns the messages to insert, in bus order."""
        fresh: list[Pending] = []
        todo = batch
        for _ in range(MAX_ROUNDS):
            if not todo:
                break
            stored = await self._store.get_by_msg_ids([m.msg_id for m, _o, _a in todo])
            again = []
            for m, original, attempt in todo:
                prior = stored.get(m.msg_id)
                if prior is None:
                    fresh.append((m, original, attempt))
                elif same_message(prior, m):
                    outcome.replayed.append(prior)
                else:
                    again.append(self._reidentify(m, original, attempt, outcome))
            todo = again
        for m, _original, _attempt in todo:
            outcome.rejected.append((m, "no free msg_id found for a colliding message"))
        return fresh

    def _reidentify(
        self, m: wire_pb2.Message, original: int, attempt: int, outcome: Outcome
    ) -> tuple[wire_pb2.Message, int, int]:
        outcome.collisions += 1
        moved = wire_pb2.Message()
        moved.CopyFrom(m)
        moved.msg_id = derived_id(original, m, attempt + 1)
        log.error(
            "msg_id collision: %d of %s (sender %d, client_msg_id %r) is another message's; "
            "stored as %d",
            m.msg_id,
            m.conversation_id,
            m.sender_id,
            m.client_msg_id,
            moved.msg_id,
        )
        return moved, original, attempt + 1

    # --------------------------------------------------------------- numbering

    async def _insert(self, todo: list[Pending], outcome: Outcome) -> None:
        """Number and insert, optimistically: a batch rarely holds a message stored
        before (only a republish or a replay after a crash does), so it goes to the
        store without looking its ids up first. A msg_id the store already holds stops
        the insert there; the rest is then looked up (replays, collisions) and
        inserted again, numbered after what was stored."""
        conflicts = lookups = 0
        while todo:
            fresh = [m for m, _original, _attempt in todo]
            await self._seed({m.conversation_id for m in fresh})
            numbered = self._number(fresh)
            try:
                await self._store.insert_many(numbered)
            except AlreadyStored as stop:
                self._accept(numbered[: stop.index], outcome)
                lookups += 1
                if lookups > MAX_ROUNDS:
                    for m, _original, _attempt in todo[stop.index :]:
                        outcome.rejected.append((m, "the store holds its msg_id but not it"))
                    return
                todo = await self._resolve_ids(todo[stop.index :], outcome)
                continue
            except SeqConflict as conflict:
                # A counter was stale (another router wrote meanwhile): reseed and go
                # on. Conflicts that keep coming mean a concurrent writer: rewind.
                self.conflicts += 1
                conflicts += 1
                await self._after_partial(numbered, conflict.index, outcome)
                if conflicts >= MAX_CONFLICTS:
                    raise
                todo = todo[conflict.index :]
                continue
            except RecordRejected as rejected:
                await self._after_partial(numbered, rejected.index, outcome)
                outcome.rejected.append((numbered[rejected.index], rejected.reason))
                todo = todo[rejected.index + 1 :]
                continue
            self._accept(numbered, outcome)
            return

    def _accept(self, stored: list[wire_pb2.Message], outcome: Outcome) -> None:
        """Messages this insert stored: counters move past them."""
        for m in stored:
            outcome.new.append(m)
            self._last[m.conversation_id] = max(self._last[m.conversation_id], m.seq)

    async def _after_partial(
        self, numbered: list[wire_pb2.Message], index: int, outcome: Outcome
    ) -> None:
        """The store took numbered[:index] (each stored, or already there) and nothing
        after: record what is stored, and renumber the rest from the store."""
        self._forget({m.conversation_id for m in numbered})
        prefix = numbered[:index]
        if prefix:
            stored = await self._store.get_by_msg_ids([m.msg_id for m in prefix])
            outcome.new.extend(stored[m.msg_id] for m in prefix if m.msg_id in stored)

    async def _seed(self, conversations: set[str]) -> None:
        missing = [c for c in conversations if c not in self._last]
        if missing:
            self._last.update(await self._store.last_seqs(missing))

    def _number(self, fresh: list[wire_pb2.Message]) -> list[wire_pb2.Message]:
        """Copies of ``fresh`` with the next seqs. The counters do not move: only
        ``_accept`` moves them, past what the store confirmed."""
        next_seq = {m.conversation_id: self._last[m.conversation_id] for m in fresh}
        out = []
        for m in fresh:
            seq = next_seq[m.conversation_id] + 1
            next_seq[m.conversation_id] = seq
            numbered = wire_pb2.Message()
            numbered.CopyFrom(m)
            numbered.seq = seq
            out.append(numbered)
        return out

    def _forget(self, conversations: set[str]) -> None:
        for conversation_id in conversations:
            self._last.pop(conversation_id, None)
