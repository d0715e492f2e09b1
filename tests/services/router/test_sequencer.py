"""Seq assignment: gap-free per conversation, replays stored and numbered once."""

from __future__ import annotations

import pytest

from im.adapters.sqlstore import SqlMessageStore
from im.ports import BackendUnavailable
from im.v1 import wire_pb2
from services.router.sequencer import Sequencer
from tests.services.router.helpers import FailingStore


def msg(msg_id: int, conv: str = "d:1:2") -> wire_pb2.Message:
    return wire_pb2.Message(
        msg_id=msg_id, conversation_id=conv, sender_id=1, body=b"x", server_ts=1
    )


@pytest.fixture
def store(tmp_path):
    return SqlMessageStore(f"sqlite:///{tmp_path / 'm.db'}")


async def test_numbers_each_conversation_from_one_without_gaps(store):
    seq = Sequencer(store)
    out = await seq.store([msg(1), msg(2, "g:7"), msg(3), msg(4, "g:7"), msg(5)])
    assert out.replayed == []
    assert [(m.conversation_id, m.seq) for m in out.new] == [
        ("d:1:2", 1),
        ("g:7", 1),
        ("d:1:2", 2),
        ("g:7", 2),
        ("d:1:2", 3),
    ]
    out = await seq.store([msg(6)])
    assert out.new[0].seq == 4


async def test_replay_is_not_stored_or_numbered_twice(store):
    seq = Sequencer(store)
    await seq.store([msg(1), msg(2)])
    out = await seq.store([msg(2), msg(3)])
    assert [m.msg_id for m in out.new] == [3]
    assert out.new[0].seq == 3
    assert [(m.msg_id, m.seq) for m in out.replayed] == [(2, 2)]
    history = await store.history("d:1:2", 0, 10)
    assert [(m.msg_id, m.seq) for m in history] == [(1, 1), (2, 2), (3, 3)]


async def test_replays_between_new_messages_leave_no_gap(store):
    # A republish after a bus failure: stored messages come back among new ones, in
    # several conversations; the new ones are numbered right after what is stored.
    seq = Sequencer(store)
    await seq.store([msg(1), msg(2, "g:7")])
    out = await seq.store([msg(3), msg(1), msg(4, "g:7"), msg(2, "g:7"), msg(5)])
    assert sorted((m.msg_id, m.seq) for m in out.new) == [(3, 2), (4, 2), (5, 3)]
    assert sorted((m.msg_id, m.seq) for m in out.replayed) == [(1, 1), (2, 1)]
    for conv, expected in (("d:1:2", [1, 2, 3]), ("g:7", [1, 2])):
        assert [m.seq for m in await store.history(conv, 0, 10)] == expected


class CountingStore(FailingStore):
    def __init__(self, store: SqlMessageStore) -> None:
        super().__init__(store)
        self.lookups = 0

    async def get_by_msg_ids(self, msg_ids):  # type: ignore[no-untyped-def]
        self.lookups += 1
        return await self._store.get_by_msg_ids(msg_ids)


async def test_a_batch_of_new_messages_is_stored_without_looking_its_ids_up(store):
    counting = CountingStore(store)
    seq = Sequencer(counting)
    await seq.store([msg(1), msg(2)])
    await seq.store([msg(3)])
    assert counting.lookups == 0
    await seq.store([msg(3), msg(4)])  # a replay: looked up once, where it stopped
    assert counting.lookups == 1


async def test_duplicate_inside_one_batch_counts_once(store):
    out = await Sequencer(store).store([msg(1), msg(1), msg(2)])
    assert [(m.msg_id, m.seq) for m in out.new] == [(1, 1), (2, 2)]


async def test_a_fresh_router_continues_from_the_store(store):
    await Sequencer(store).store([msg(1), msg(2)])
    out = await Sequencer(store).store([msg(3)])
    assert out.new[0].seq == 3


async def test_stale_counter_is_reseeded_on_conflict(store):
    mine = Sequencer(store)
    await mine.store([msg(1)])
    # Another router owned the conversation for a while (a rebalance we missed).
    await Sequencer(store).store([msg(2), msg(3)])
    out = await mine.store([msg(4)])
    assert out.new[0].seq == 4
    assert mine.conflicts == 1
    seqs = [m.seq for m in await store.history("d:1:2", 0, 10)]
    assert seqs == [1, 2, 3, 4]


@pytest.mark.parametrize("keep", [0, 1, 2])
async def test_a_failed_insert_then_its_replay_leaves_no_gap(store, keep):
    flaky = FailingStore(store)
    seq = Sequencer(flaky)
    await seq.store([msg(1)])
    flaky.fail_after = keep
    with pytest.raises(BackendUnavailable):
        await seq.store([msg(2), msg(3), msg(4)])
    await seq.store([msg(2), msg(3), msg(4), msg(5)])  # the rewound batch, and more
    history = await store.history("d:1:2", 0, 10)
    assert [(m.msg_id, m.seq) for m in history] == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]


def from_sender(msg_id: int, sender: int, cid: str, conv: str = "d:1:2") -> wire_pb2.Message:
    return wire_pb2.Message(
        msg_id=msg_id, conversation_id=conv, sender_id=sender, client_msg_id=cid, server_ts=1
    )


async def test_a_colliding_msg_id_is_stored_under_a_derived_id(store):
    seq = Sequencer(store)
    await seq.store([from_sender(1 << 40, 1, "a")])
    out = await seq.store([from_sender(1 << 40, 2, "b")])  # another message, same id
    assert out.collisions == 1 and out.replayed == []
    (moved,) = out.new
    assert moved.msg_id != 1 << 40
    assert moved.msg_id >> 22 == (1 << 40) >> 22  # the same millisecond
    # Its own retransmit (same id from the connector's idempotency record) is
    # recognised as a replay of the stored copy, not stored again.
    again = await seq.store([from_sender(1 << 40, 2, "b")])
    assert again.new == [] and [m.msg_id for m in again.replayed] == [moved.msg_id]
    history = await store.history("d:1:2", 0, 10)
    assert [(m.sender_id, m.seq) for m in history] == [(1, 1), (2, 2)]


async def test_a_collision_inside_one_batch(store):
    out = await Sequencer(store).store([from_sender(7, 1, "a"), from_sender(7, 2, "b")])
    assert [(m.sender_id, m.seq) for m in out.new] == [(1, 1), (2, 2)]
    assert out.new[0].msg_id == 7 and out.new[1].msg_id != 7
