"""Seq assignment: gap-free per conversation, replays stored and numbered once."""

from __future__ import annotations

import pytest

from im.adapters.sqlstore import SqlMessageStore
from im.v1 import wire_pb2
from services.router.sequencer import Sequencer


def msg(msg_id: int, conv: str = "d:1:2") -> wire_pb2.Message:
    return wire_pb2.Message(
        msg_id=msg_id, conversation_id=conv, sender_id=1, body=b"x", server_ts=1
    )


@pytest.fixture
def store(tmp_path):
    return SqlMessageStore(f"sqlite:///{tmp_path / 'm.db'}")


async def test_numbers_each_conversation_from_one_without_gaps(store):
    seq = Sequencer(store)
    new, replayed = await seq.store([msg(1), msg(2, "g:7"), msg(3), msg(4, "g:7"), msg(5)])
    assert replayed == []
    assert [(m.conversation_id, m.seq) for m in new] == [
        ("d:1:2", 1),
        ("g:7", 1),
        ("d:1:2", 2),
        ("g:7", 2),
        ("d:1:2", 3),
    ]
    new, _ = await seq.store([msg(6)])
    assert new[0].seq == 4


async def test_replay_is_not_stored_or_numbered_twice(store):
    seq = Sequencer(store)
    await seq.store([msg(1), msg(2)])
    new, replayed = await seq.store([msg(2), msg(3)])
    assert [m.msg_id for m in new] == [3]
    assert new[0].seq == 3
    assert [(m.msg_id, m.seq) for m in replayed] == [(2, 2)]
    history = await store.history("d:1:2", 0, 10)
    assert [(m.msg_id, m.seq) for m in history] == [(1, 1), (2, 2), (3, 3)]


async def test_duplicate_inside_one_batch_counts_once(store):
    new, _ = await Sequencer(store).store([msg(1), msg(1), msg(2)])
    assert [(m.msg_id, m.seq) for m in new] == [(1, 1), (2, 2)]


async def test_a_fresh_router_continues_from_the_store(store):
    await Sequencer(store).store([msg(1), msg(2)])
    new, _ = await Sequencer(store).store([msg(3)])
    assert new[0].seq == 3


async def test_stale_counter_is_reseeded_on_conflict(store):
    mine = Sequencer(store)
    await mine.store([msg(1)])
    # Another router owned the conversation for a while (a rebalance we missed).
    await Sequencer(store).store([msg(2), msg(3)])
    new, _ = await mine.store([msg(4)])
    assert new[0].seq == 4
    assert mine.conflicts == 1
    seqs = [m.seq for m in await store.history("d:1:2", 0, 10)]
    assert seqs == [1, 2, 3, 4]
