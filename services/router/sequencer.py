"""Per-conversation seq assignment and replay recognition.

One router owns a conversation at a time (the bus is keyed by conversation), so an
in-memory counter seeded from the store is enough; the store's unique index on
(conversation, seq) catches a stale counter after a rebalance, and the caller then
reseeds. A replayed msg_id keeps the seq it was stored with.
"""

from __future__ import annotations

from im.ports import MessageStore, SeqConflict
from im.v1 import wire_pb2


class Sequencer:
    def __init__(self, store: MessageStore) -> None:
        self._store = store
        self._last: dict[str, int] = {}
        self.conflicts = 0

    def reset(self) -> None:
        """Forget counters (partition assignment changed: another router may have
        written meanwhile)."""
        self._last.clear()

    async def store(
        self, messages: list[wire_pb2.Message]
    ) -> tuple[list[wire_pb2.Message], list[wire_pb2.Message]]:
        """Number and store a batch of inbound messages (in bus order).

        Returns (new, replayed): new ones carry their fresh seq; replayed ones are the
        stored copies of msg_ids seen before (stored and numbered only once).
        """
        unique: dict[int, wire_pb2.Message] = {}
        for m in messages:
            unique.setdefault(m.msg_id, m)  # a duplicate within one batch counts once
        stored = await self._store.get_by_msg_ids(list(unique))
        replayed = list(stored.values())
        fresh = [m for mid, m in unique.items() if mid not in stored]
        for attempt in range(5):
            await self._seed({m.conversation_id for m in fresh})
            numbered = self._number(fresh)
            try:
                inserted = await self._store.insert_many(numbered)
            except SeqConflict as conflict:
                self.conflicts += 1
                self._last.pop(conflict.conversation_id, None)
                # Some of the batch may be stored already: those are replays now.
                again = await self._store.get_by_msg_ids([m.msg_id for m in fresh])
                replayed.extend(again.values())
                fresh = [m for m in fresh if m.msg_id not in again]
                for m in fresh:
                    self._last.pop(m.conversation_id, None)
                if attempt == 4:
                    raise
                continue
            new = [m for m, ok in zip(numbered, inserted, strict=True) if ok]
            dupes = [m.msg_id for m, ok in zip(numbered, inserted, strict=True) if not ok]
            if dupes:
                replayed.extend((await self._store.get_by_msg_ids(dupes)).values())
            return new, replayed
        raise AssertionError("unreachable")

    async def _seed(self, conversations: set[str]) -> None:
        missing = [c for c in conversations if c not in self._last]
        if missing:
            self._last.update(await self._store.last_seqs(missing))

    def _number(self, fresh: list[wire_pb2.Message]) -> list[wire_pb2.Message]:
        out = []
        for m in fresh:
            seq = self._last[m.conversation_id] + 1
            self._last[m.conversation_id] = seq
            numbered = wire_pb2.Message()
            numbered.CopyFrom(m)
            numbered.seq = seq
            out.append(numbered)
        return out
