"""One contract for the message store, run against every adapter.

- ``sqlite``: SqlMessageStore on a SQLite file (standalone default).
- ``mariadb``: SqlMessageStore on MariaDB (integration, ``mysql_url``). The ``messages``
  table is shared, so each test uses conversation ids and msg_ids unique to it and
  deletes its rows afterwards.
- ``mongo``: MongoMessageStore (integration, ``mongo_url``) in a database of its own,
  dropped afterwards.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from im.adapters.mongo_store import MongoMessageStore
from im.adapters.sqlstore import SqlMessageStore
from im.db import MessageRow
from im.ports import SeqConflict
from im.v1 import wire_pb2


@dataclass
class Case:
    """The store under test and the namespace this test owns."""

    store: Any  # a MessageStore
    ns: str  # prefix of this test's conversation ids
    base_id: int  # this test's msg_ids start here

    def conv(self, name: str) -> str:
        return f"{self.ns}{name}"

    def msg(self, n: int, conv: str, seq: int, body: bytes | None = None) -> wire_pb2.Message:
        return wire_pb2.Message(
            msg_id=self.base_id + n,
            conversation_id=self.conv(conv),
            seq=seq,
            sender_id=10_000_000_000 + n,  # beyond 32 bits on purpose
            sender_device=f"dev-{n}",
            client_msg_id=f"cm-{n}",
            content_type="text/plain",
            body=body if body is not None else f"body {n}".encode(),
            server_ts=1_800_000_000_000 + n,
        )


def _namespace() -> tuple[str, int]:
    # Random conversation prefix and a random 2^40-aligned msg_id block below 2^62.
    return f"t{uuid.uuid4().hex[:10]}:", random.randrange(1, 2**22) << 40


async def _sqlite(tmp_path: Path) -> AsyncIterator[Case]:
    ns, base = _namespace()
    store = SqlMessageStore(f"sqlite:///{tmp_path / 'messages.db'}")
    try:
        yield Case(store, ns, base)
    finally:
        await store.close()


async def _mariadb(url: str) -> AsyncIterator[Case]:
    ns, base = _namespace()
    store = SqlMessageStore(url)
    try:
        yield Case(store, ns, base)
    finally:

        def cleanup() -> None:
            with store._engine.begin() as conn:
                conn.execute(delete(MessageRow).where(MessageRow.conversation_id.startswith(ns)))

        await asyncio.to_thread(cleanup)
        await store.close()


async def _mongo(url: str) -> AsyncIterator[Case]:
    ns, base = _namespace()
    database = f"im_test_{uuid.uuid4().hex[:12]}"
    store = MongoMessageStore(url, database=database)
    try:
        yield Case(store, ns, base)
    finally:
        await store._client.drop_database(database)
        await store.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("mariadb", id="mariadb", marks=pytest.mark.integration),
        pytest.param("mongo", id="mongo", marks=pytest.mark.integration),
    ]
)
async def case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Case]:
    if request.param == "sqlite":
        gen = _sqlite(tmp_path)
    elif request.param == "mariadb":
        gen = _mariadb(request.getfixturevalue("mysql_url"))
    else:
        gen = _mongo(request.getfixturevalue("mongo_url"))
    item = await anext(gen)
    try:
        yield item
    finally:
        await gen.aclose()


def ids(messages: list[wire_pb2.Message]) -> list[tuple[int, int]]:
    return [(m.msg_id, m.seq) for m in messages]


# ------------------------------------------------------------------- writes


async def test_insert_many_stores_every_field(case: Case) -> None:
    s = case.store
    big = bytes(range(256)) * 64  # binary, 16 KiB
    batch = [case.msg(1, "a", 1, big), case.msg(2, "a", 2), case.msg(3, "b", 1, b"")]
    assert await s.insert_many(batch) == [True, True, True]
    got = await s.get_by_msg_ids([m.msg_id for m in batch] + [case.base_id + 999])
    assert set(got) == {m.msg_id for m in batch}  # unknown ids are left out
    for m in batch:
        assert got[m.msg_id] == m  # every field round-trips, 64-bit ints and bytes too
    assert await s.insert_many([]) == []
    assert await s.get_by_msg_ids([]) == {}


async def test_replay_is_recognised_by_msg_id(case: Case) -> None:
    s = case.store
    first = [case.msg(1, "a", 1), case.msg(2, "a", 2)]
    assert await s.insert_many(first) == [True, True]
    # The same batch again (a crash before the offset commit), plus a new message.
    again = [*first, case.msg(3, "a", 3)]
    assert await s.insert_many(again) == [False, False, True]
    assert ids(await s.history(case.conv("a"), 0, 10)) == ids(again)


async def test_duplicate_inside_one_batch(case: Case) -> None:
    s = case.store
    m = case.msg(1, "a", 1)
    assert await s.insert_many([m, m, case.msg(2, "a", 2)]) == [True, False, True]


async def test_replay_with_another_seq_is_still_a_replay(case: Case) -> None:
    # The msg_id decides: a message stored before is never stored twice, whatever seq
    # a re-run would give it.
    s = case.store
    await s.insert_many([case.msg(1, "a", 1)])
    assert await s.insert_many([case.msg(1, "a", 5)]) == [False]
    assert ids(await s.history(case.conv("a"), 0, 10)) == [(case.base_id + 1, 1)]


async def test_seq_taken_by_another_message_raises(case: Case) -> None:
    s = case.store
    await s.insert_many([case.msg(1, "a", 1), case.msg(2, "a", 2)])
    with pytest.raises(SeqConflict) as err:
        await s.insert_many([case.msg(3, "a", 3), case.msg(4, "a", 2), case.msg(5, "b", 1)])
    assert err.value.conversation_id == case.conv("a")
    assert err.value.seq == 2
    # The original holder of seq 2 is untouched.
    (kept,) = await s.history(case.conv("a"), 1, 1)
    assert kept.msg_id == case.base_id + 2
    # The messages that did not conflict may or may not be stored (the adapters differ:
    # SQL stops at the conflict, Mongo inserts the rest), but never under a wrong seq.
    for m in await s.history(case.conv("a"), 0, 10) + await s.history(case.conv("b"), 0, 10):
        assert m.seq == {1: 1, 2: 2, 3: 3, 5: 1}[m.msg_id - case.base_id]


async def test_seq_conflict_inside_one_batch_raises(case: Case) -> None:
    with pytest.raises(SeqConflict):
        await case.store.insert_many([case.msg(1, "a", 1), case.msg(2, "a", 1)])


# -------------------------------------------------------------------- reads


async def test_history_order_limit_and_after_seq(case: Case) -> None:
    s = case.store
    # Inserted out of order, in two batches, with another conversation interleaved.
    await s.insert_many([case.msg(n, "a", n) for n in (5, 3, 9, 1)])
    await s.insert_many([case.msg(n, "a", n) for n in (2, 8, 4, 7, 6, 10)])
    await s.insert_many([case.msg(100 + n, "b", n) for n in range(1, 4)])
    a = case.conv("a")
    assert [m.seq for m in await s.history(a, 0, 100)] == list(range(1, 11))
    assert [m.seq for m in await s.history(a, 0, 3)] == [1, 2, 3]
    assert [m.seq for m in await s.history(a, 4, 3)] == [5, 6, 7]
    assert [m.seq for m in await s.history(a, 8, 100)] == [9, 10]
    assert await s.history(a, 10, 100) == []
    assert await s.history(case.conv("nobody"), 0, 100) == []
    assert [m.seq for m in await s.history(case.conv("b"), 0, 100)] == [1, 2, 3]
    assert all(m.conversation_id == a for m in await s.history(a, 0, 100))


async def test_last_seqs_for_several_conversations(case: Case) -> None:
    s = case.store
    await s.insert_many([case.msg(n, "a", n) for n in range(1, 6)])
    await s.insert_many([case.msg(100 + n, "b", n) for n in (1, 2)])
    await s.insert_many([case.msg(200, "c", 1)])
    got = await s.last_seqs([case.conv("a"), case.conv("b"), case.conv("c"), case.conv("none")])
    assert got == {case.conv("a"): 5, case.conv("b"): 2, case.conv("c"): 1, case.conv("none"): 0}
    assert await s.last_seqs([case.conv("none")]) == {case.conv("none"): 0}
    assert await s.last_seqs([]) == {}
    await s.insert_many([case.msg(6, "a", 6)])
    assert await s.last_seqs([case.conv("a")]) == {case.conv("a"): 6}


async def test_healthy(case: Case) -> None:
    assert await case.store.healthy() is True


# ------------------------------------------------------------- Mongo-only details


@pytest.mark.integration
async def test_mongo_document_layout_and_index(mongo_url: str) -> None:
    gen = _mongo(mongo_url)
    case = await anext(gen)
    try:
        store: MongoMessageStore = case.store
        await store.insert_many([case.msg(1, "a", 1, b"\x00\xff")])
        doc = await store.collection.find_one({"_id": case.base_id + 1})
        assert doc is not None
        assert doc["conversation_id"] == case.conv("a") and doc["seq"] == 1
        assert doc["body"] == b"\x00\xff"
        indexes = await store.collection.index_information()
        seq_index = indexes["conversation_seq"]
        assert seq_index["unique"] and seq_index["key"] == [("conversation_id", 1), ("seq", 1)]
    finally:
        await gen.aclose()


async def test_mongo_unhealthy_when_unreachable() -> None:
    # No server needed: a port nothing listens on; healthy() answers False in time.
    store = MongoMessageStore("mongodb://127.0.0.1:1/im?serverSelectionTimeoutMS=200")
    try:
        assert await store.healthy(timeout=1.0) is False
    finally:
        await store.close()
