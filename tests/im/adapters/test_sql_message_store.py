"""The SQL message store (SQLite here): store once, replay-safe, ordered history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event

from im import events
from im.adapters.sqlstore import SqlMessageStore
from im.ports import AlreadyStored, BackendUnavailable, SeqConflict
from im.v1 import wire_pb2


def message(conversation_id: str, seq: int, msg_id: int | None = None) -> wire_pb2.Message:
    return wire_pb2.Message(
        msg_id=msg_id if msg_id is not None else 1_000_000 + seq * 10 + len(conversation_id),
        conversation_id=conversation_id,
        seq=seq,
        sender_id=7,
        sender_device="phone",
        client_msg_id=f"c-{conversation_id}-{seq}",
        content_type="text/plain",
        body=f"message {seq}".encode(),
        server_ts=1_800_000_000_000 + seq,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlMessageStore]:
    store = SqlMessageStore(f"sqlite:///{tmp_path / 'messages.db'}")
    yield store
    await store.close()


async def test_insert_many_then_replay_is_recognised(store: SqlMessageStore) -> None:
    batch = [message("d:1:2", seq) for seq in (1, 2, 3)]
    await store.insert_many(batch)
    with pytest.raises(AlreadyStored):
        await store.insert_many(batch)
    # A batch with a replay first stores nothing; the new message goes in alone.
    with pytest.raises(AlreadyStored):
        await store.insert_many([batch[2], message("d:1:2", 4)])
    await store.insert_many([message("d:1:2", 4)])
    await store.insert_many([])
    assert [m.seq for m in await store.history("d:1:2", 0, 100)] == [1, 2, 3, 4]


async def test_another_message_on_a_taken_seq_is_a_conflict(store: SqlMessageStore) -> None:
    await store.insert_many([message("g:5", 1)])
    with pytest.raises(SeqConflict) as caught:
        await store.insert_many([message("g:5", 1, msg_id=999)])
    assert (caught.value.conversation_id, caught.value.seq, caught.value.index) == ("g:5", 1, 0)
    assert await store.get_by_msg_ids([999]) == {}


async def test_history_is_ascending_after_a_seq_and_limited(store: SqlMessageStore) -> None:
    await store.insert_many([message("g:5", seq) for seq in (5, 3, 1, 4, 2)])
    await store.insert_many([message("g:6", seq, msg_id=2_000_000 + seq) for seq in (1, 2)])

    assert [m.seq for m in await store.history("g:5", 0, 100)] == [1, 2, 3, 4, 5]
    assert [m.seq for m in await store.history("g:5", 2, 2)] == [3, 4]
    assert await store.history("g:5", 5, 10) == []
    assert await store.history("g:404", 0, 10) == []

    (third,) = await store.history("g:5", 2, 1)
    assert third == message("g:5", 3)  # every field survives the round trip


async def test_last_seqs_and_lookup_by_msg_id(store: SqlMessageStore) -> None:
    stored = [message("g:5", seq) for seq in (1, 2, 3)] + [message("d:1:2", 1)]
    await store.insert_many(stored)
    assert await store.last_seqs(["g:5", "d:1:2", "g:404"]) == {"g:5": 3, "d:1:2": 1, "g:404": 0}
    assert await store.last_seqs([]) == {}

    found = await store.get_by_msg_ids([stored[1].msg_id, 12345])
    assert found == {stored[1].msg_id: stored[1]}
    assert await store.healthy()


async def test_a_database_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}"  # a directory: SQLite cannot open it
    with pytest.raises(BackendUnavailable):
        SqlMessageStore(url)
    store = SqlMessageStore(url, auto_migrate=False)
    with pytest.raises(BackendUnavailable) as caught:
        await store.history("g:5", 0, 10)
    assert caught.value.backend == "message store" and caught.value.__cause__ is not None
    assert await store.healthy() is False
    await store.close()


async def test_events_are_applied_in_a_few_statements_not_one_per_change(
    store: SqlMessageStore,
) -> None:
    targets = [message("g:7", seq) for seq in range(1, 11)]
    edits = [
        wire_pb2.Message(
            msg_id=3_000_000 + i,
            conversation_id="g:7",
            seq=20 + i,
            content_type=events.EDIT,
            refers_to=targets[i].msg_id,
            body=b"edited",
            server_ts=1_900_000_000_000,
        )
        for i in range(5)
    ]
    recalls = [
        wire_pb2.Message(
            msg_id=4_000_000 + i,
            conversation_id="g:7",
            seq=30 + i,
            content_type=events.RECALL,
            refers_to=targets[i].msg_id,
        )
        for i in range(3, 8)
    ]
    await store.insert_many([*targets, *edits, *recalls])
    statements: list[str] = []
    event.listen(store._engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    assert await store.apply_events([*edits, *recalls]) == []
    # One look-up, the edits, the recalled targets and their edits' text.
    assert len(statements) == 4, statements
    got = await store.get_by_msg_ids([m.msg_id for m in targets + edits])
    assert [got[m.msg_id].body for m in targets[:8]] == [b"edited"] * 3 + [b""] * 5
    assert [got[m.msg_id].recalled for m in targets[:8]] == [False] * 3 + [True] * 5
    assert [got[m.msg_id].body for m in edits] == [b"edited"] * 3 + [b""] * 2
    assert got[targets[9].msg_id] == targets[9]
