"""One contract for the message store, run against every adapter.

- ``sqlite``: SqlMessageStore on a SQLite file (standalone default).
- ``mariadb``: SqlMessageStore on MariaDB (integration, ``mysql_url``). The ``messages``
  table is shared, so each test uses conversation ids and msg_ids unique to it and
  deletes its rows afterwards.
- ``mongo``: MongoMessageStore (integration, ``mongo_url``) in a database of its own,
  dropped afterwards.

Both adapters are also the dead-letter store; on MariaDB the ``dead_letters`` table is
shared too, so letter ids carry the test's prefix and at_ms lie far in the future.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import WriteConcern
from sqlalchemy import delete

from im.adapters import mongo_store
from im.adapters.mongo_indexes import BACKFILL_EVERY_SECONDS
from im.adapters.mongo_store import MongoMessageStore
from im.adapters.sqlstore import SqlMessageStore
from im.clock import FakeClock
from im.db import DeadLetterRow, MessageRow
from im.events import ERASED
from im.ports import AlreadyStored, BackendUnavailable, DeadLetter, RecordRejected, SeqConflict
from im.v1 import wire_pb2


@dataclass
class Case:
    """The store under test and the namespace this test owns."""

    kind: str  # "sqlite", "mariadb" or "mongo"
    store: Any  # a MessageStore and DeadLetterStore
    ns: str  # prefix of this test's conversation ids and letter ids
    base_id: int  # this test's msg_ids start here
    base_ms: int  # this test's dead letters are at base_ms and after

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

    def letter(self, n: int, at: int, reason: str = "undecodable") -> DeadLetter:
        return DeadLetter(
            letter_id=f"{self.ns}{n:04d}",
            topic="im.inbound",
            partition=n % 4,
            offset=5_000_000_000 + n,  # beyond 32 bits on purpose
            key=f"d:{n}:{n + 1}",
            value=bytes([n % 256]) + b"\x00\xff raw",
            reason=reason,
            at_ms=self.base_ms + at,
        )


def _from(message: wire_pb2.Message, sender_id: int) -> wire_pb2.Message:
    message.sender_id = sender_id
    return message


def _namespace() -> tuple[str, int, int]:
    # Random conversation prefix, a random 2^40-aligned msg_id block below 2^62, and
    # dead-letter times far beyond any real clock (2^52 ms is year 144,683).
    ns = f"t{uuid.uuid4().hex[:10]}:"
    return ns, random.randrange(1, 2**22) << 40, (2**52) + (random.randrange(2**20) << 20)


async def _sqlite(tmp_path: Path) -> AsyncIterator[Case]:
    store = SqlMessageStore(f"sqlite:///{tmp_path / 'messages.db'}")
    try:
        yield Case("sqlite", store, *_namespace())
    finally:
        await store.close()


async def _mariadb(url: str, search_timeout: float | None = None) -> AsyncIterator[Case]:
    ns, base, base_ms = _namespace()
    store = SqlMessageStore(url, search_timeout=search_timeout)
    try:
        yield Case("mariadb", store, ns, base, base_ms)
    finally:

        def cleanup() -> None:
            with store._engine.begin() as conn:
                conn.execute(delete(MessageRow).where(MessageRow.conversation_id.startswith(ns)))
                conn.execute(delete(DeadLetterRow).where(DeadLetterRow.letter_id.startswith(ns)))

        await asyncio.to_thread(cleanup)
        await store.close()


async def _mongo(url: str, **options: Any) -> AsyncIterator[Case]:
    """``options``: more keyword arguments of MongoMessageStore (a clock)."""
    database = f"im_test_{uuid.uuid4().hex[:12]}"
    store = MongoMessageStore(url, database=database, **options)
    try:
        yield Case("mongo", store, *_namespace())
    finally:
        # The background work first: an index it builds would bring the database back.
        await store._upkeep.stop()
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
    await s.insert_many(batch)
    got = await s.get_by_msg_ids([m.msg_id for m in batch] + [case.base_id + 999])
    assert set(got) == {m.msg_id for m in batch}  # unknown ids are left out
    for m in batch:
        assert got[m.msg_id] == m  # every field round-trips, 64-bit ints and bytes too
    await s.insert_many([])  # nothing to do
    assert await s.get_by_msg_ids([]) == {}


async def test_replay_is_recognised_by_msg_id(case: Case) -> None:
    s = case.store
    first = [case.msg(1, "a", 1), case.msg(2, "a", 2)]
    await s.insert_many(first)
    # The same batch again (a crash before the offset commit), plus a new message:
    # the first stored msg_id stops the insert, nothing after it is stored.
    again = [*first, case.msg(3, "a", 3)]
    with pytest.raises(AlreadyStored) as err:
        await s.insert_many(again)
    assert (err.value.msg_id, err.value.index) == (case.base_id + 1, 0)
    assert ids(await s.history(case.conv("a"), 0, 10)) == ids(first)


async def test_duplicate_inside_one_batch(case: Case) -> None:
    s = case.store
    m = case.msg(1, "a", 1)
    with pytest.raises(AlreadyStored) as err:
        await s.insert_many([m, m, case.msg(2, "a", 2)])
    assert err.value.index == 1
    assert ids(await s.history(case.conv("a"), 0, 10)) == ids([m])


async def test_replay_with_another_seq_is_still_a_replay(case: Case) -> None:
    # The msg_id decides: a message stored before is never stored twice, whatever seq
    # a re-run would give it.
    s = case.store
    await s.insert_many([case.msg(1, "a", 1)])
    with pytest.raises(AlreadyStored) as err:
        await s.insert_many([case.msg(1, "a", 5)])
    assert err.value.index == 0
    assert ids(await s.history(case.conv("a"), 0, 10)) == [(case.base_id + 1, 1)]


async def test_seq_taken_by_another_message_stops_the_batch_there(case: Case) -> None:
    s = case.store
    await s.insert_many([case.msg(1, "a", 1), case.msg(2, "a", 2)])
    batch = [case.msg(3, "a", 3), case.msg(4, "b", 1), case.msg(5, "a", 2), case.msg(6, "b", 2)]
    with pytest.raises(SeqConflict) as err:
        await s.insert_many(batch)
    assert (err.value.conversation_id, err.value.seq, err.value.index) == (case.conv("a"), 2, 2)
    # The original holder of seq 2 is untouched.
    (kept,) = await s.history(case.conv("a"), 1, 1)
    assert kept.msg_id == case.base_id + 2
    # In list order up to the conflict, nothing after it: a retry of the rest after
    # reseeding can never store a later message of a conversation before an earlier one.
    stored_a = [case.msg(1, "a", 1), case.msg(2, "a", 2), batch[0]]
    assert ids(await s.history(case.conv("a"), 0, 10)) == ids(stored_a)
    assert ids(await s.history(case.conv("b"), 0, 10)) == ids([batch[1]])
    assert await s.get_by_msg_ids([case.base_id + 5, case.base_id + 6]) == {}


async def test_seq_conflict_inside_one_batch_raises(case: Case) -> None:
    batch = [case.msg(1, "a", 1), case.msg(2, "a", 1), case.msg(3, "a", 2)]
    with pytest.raises(SeqConflict) as err:
        await case.store.insert_many(batch)
    assert (err.value.seq, err.value.index) == (1, 1)
    assert ids(await case.store.history(case.conv("a"), 0, 10)) == ids(batch[:1])


async def test_replay_in_the_middle_stops_the_batch_there(case: Case) -> None:
    # Nothing after a replay is stored: the messages behind it were numbered as if it
    # were new, so storing them would leave a gap where its seq was.
    s = case.store
    await s.insert_many([case.msg(1, "a", 1)])
    for replay in (case.msg(1, "a", 3), case.msg(1, "a", 2)):  # its seq free, or taken
        batch = [case.msg(2, "a", 2), replay, case.msg(3, "a", 4)]
        if replay.seq == 2:
            batch = [replay, case.msg(3, "a", 3)]
        with pytest.raises(AlreadyStored) as err:
            await s.insert_many(batch)
        assert err.value.msg_id == case.base_id + 1
    assert [m.seq for m in await s.history(case.conv("a"), 0, 10)] == [1, 2]


async def test_a_replay_that_collides_on_seq_too_is_a_replay(case: Case) -> None:
    # The msg_id decides whichever index the store names first.
    s = case.store
    await s.insert_many([case.msg(1, "a", 1), case.msg(2, "a", 2)])
    batch = [case.msg(3, "a", 3), case.msg(2, "a", 2), case.msg(5, "a", 4)]
    with pytest.raises(AlreadyStored) as err:
        await s.insert_many(batch)
    assert err.value.index == 1
    assert [m.seq for m in await s.history(case.conv("a"), 0, 10)] == [1, 2, 3]


# ------------------------------------------------------------ rejected records


async def test_a_value_out_of_64_bit_range_is_rejected(case: Case) -> None:
    # seq is uint64 on the wire; no store here holds past 2^63 - 1 (BIGINT, SQLite's
    # INTEGER, BSON Int64). That one message is refused; the batch stops there.
    s = case.store
    batch = [case.msg(1, "a", 1), case.msg(2, "b", 2**63), case.msg(3, "a", 2)]
    with pytest.raises(RecordRejected) as err:
        await s.insert_many(batch)
    assert err.value.index == 1 and err.value.reason
    assert ids(await s.history(case.conv("a"), 0, 10)) == ids(batch[:1])
    assert await s.get_by_msg_ids([case.base_id + 2, case.base_id + 3]) == {}
    # The store is fine afterwards: the rest goes in on the next call.
    await s.insert_many(batch[2:])
    assert ids(await s.history(case.conv("a"), 0, 10)) == ids([batch[0], batch[2]])


async def test_a_message_too_big_for_the_store_is_rejected(case: Case) -> None:
    s = case.store
    if case.kind == "sqlite":
        pytest.skip("SQLite does not enforce column lengths; its rows reach 1 GB")
    elif case.kind == "mariadb":
        bad = case.msg(2, "a", 2)
        bad.content_type = "x" * 65  # VARCHAR(64) in strict mode
    else:
        bad = case.msg(2, "a", 2, body=b"\x01" * (17 * 1024 * 1024))  # over 16 MiB BSON
    batch = [case.msg(1, "a", 1), bad, case.msg(3, "a", 3)]
    with pytest.raises(RecordRejected) as err:
        await s.insert_many(batch)
    assert err.value.index == 1
    assert ids(await s.history(case.conv("a"), 0, 10)) == ids(batch[:1])


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


async def test_erase_sender_empties_only_that_senders_bodies(case: Case) -> None:
    s = case.store
    # A sender id of this test alone: the MariaDB table is shared.
    sender = case.base_id // 1024 + 7
    mine = [_from(case.msg(n, "e", n), sender) for n in (1, 3, 4)]
    others = [case.msg(n, "e", n) for n in (2, 5)]
    for message in (mine[0], others[0]):
        message.attachment_ids.append("A" * 22)
    await s.insert_many(sorted([*mine, *others], key=lambda m: m.seq))
    assert await s.erase_sender(sender) == 3
    stored = await s.history(case.conv("e"), 0, 10)
    # Their files are no longer shared either (downloads need a message naming them).
    assert [list(m.attachment_ids) for m in stored] == [[], ["A" * 22], [], [], []]
    assert [(m.seq, m.body, m.content_type) for m in stored] == [
        (1, b"", ERASED),
        (2, b"body 2", "text/plain"),
        (3, b"", ERASED),
        (4, b"", ERASED),
        (5, b"body 5", "text/plain"),
    ]
    # Ids, seqs, senders and times stay: histories keep no gap.
    assert [(m.msg_id, m.sender_id, m.server_ts) for m in stored if m.seq == 3] == [
        (mine[1].msg_id, sender, mine[1].server_ts)
    ]
    assert await s.erase_sender(sender) == 0  # done already: nothing counted twice
    assert await s.erase_sender(sender + 1) == 0


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


async def test_last_activity_is_the_newest_messages_seq_and_time(case: Case) -> None:
    s = case.store
    await s.insert_many([case.msg(n, "a", n) for n in range(1, 4)])
    await s.insert_many([case.msg(100, "b", 1)])
    got = await s.last_activity([case.conv("a"), case.conv("b"), case.conv("none")])
    assert got == {
        case.conv("a"): (3, 1_800_000_000_003),
        case.conv("b"): (1, 1_800_000_000_100),
        case.conv("none"): (0, 0),
    }
    assert await s.last_activity([]) == {}


async def test_healthy(case: Case) -> None:
    assert await case.store.healthy() is True


# ---------------------------------------------------------------- dead letters


async def test_dead_letters_are_stored_once(case: Case) -> None:
    s = case.store
    first = case.letter(1, at=10)
    await s.put_dead_letters([first, case.letter(2, at=20)])
    # Seen again after a rewind (even with another time and reason): kept as it was.
    again = dataclasses.replace(first, at_ms=case.base_ms + 99, reason="other")
    await s.put_dead_letters([again, again, case.letter(3, at=30)])
    await s.put_dead_letters([])
    got = await s.dead_letters(10, before_ms=case.base_ms + 1000)
    assert [x.letter_id for x in got] == [case.letter(n, 0).letter_id for n in (3, 2, 1)]
    assert got[2] == first  # every field round-trips, binary value and 64-bit offset too


async def test_dead_letters_newest_first_limit_and_before(case: Case) -> None:
    s = case.store
    # Two at the same time: the larger letter_id first.
    letters = [case.letter(n, at) for n, at in ((1, 10), (2, 30), (3, 20), (4, 30), (5, 40))]
    await s.put_dead_letters(letters)
    newest = [x.letter_id for x in await s.dead_letters(3)]
    assert newest == [case.letter(n, 0).letter_id for n in (5, 4, 2)]
    older = await s.dead_letters(10, before_ms=case.base_ms + 40)
    assert [x.letter_id for x in older] == [case.letter(n, 0).letter_id for n in (4, 2, 3, 1)]
    page = await s.dead_letters(2, before_ms=case.base_ms + 30)
    assert [x.letter_id for x in page] == [case.letter(n, 0).letter_id for n in (3, 1)]
    before_all = await s.dead_letters(10, before_ms=case.base_ms + 10)
    assert not [x for x in before_all if x.letter_id.startswith(case.ns)]
    assert await s.dead_letters(0) == []


async def test_a_long_reason_is_cut_not_refused(case: Case) -> None:
    s = case.store
    reason = "bad cursor: " + "é" * 5000
    await s.put_dead_letters([case.letter(1, at=1, reason=reason)])
    (got,) = await s.dead_letters(1, before_ms=case.base_ms + 2)
    assert got.reason == reason[:1024]


# ------------------------------------------------------------- Mongo-only details


@pytest.mark.integration
async def test_mongo_document_layout_and_index(mongo_url: str) -> None:
    clock = FakeClock()
    gen = _mongo(mongo_url, clock=clock)
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
        # The other indexes are built in the background: done once it waits to backfill.
        assert await clock.wait_for_sleep() == BACKFILL_EVERY_SECONDS
        indexes = await store.collection.index_information()
        assert indexes["refers_to"]["key"] == [("refers_to", 1)]
        letter_indexes = await store.dead_letter_collection.index_information()
        assert letter_indexes["at_ms"]["key"] == [("at_ms", -1), ("_id", -1)]
    finally:
        await gen.aclose()


@pytest.mark.integration
async def test_mongo_server_refusing_one_document_is_a_rejection(
    mongo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Skip the adapter's own size check so the server judges the document: SecantusDB
    # answers with a write error for it alone (10334, too large), not a duplicate key.
    monkeypatch.setattr(mongo_store, "MAX_DOCUMENT_BYTES", 64 * 1024 * 1024)
    gen = _mongo(mongo_url)
    case = await anext(gen)
    try:
        big = case.msg(2, "a", 2, body=b"\x01" * (17 * 1024 * 1024))
        batch = [case.msg(1, "a", 1), big, case.msg(3, "a", 3)]
        with pytest.raises(RecordRejected) as err:
            await case.store.insert_many(batch)
        assert err.value.index == 1 and "large" in err.value.reason
        assert len(err.value.reason) < 1000  # the server's message, not the document
        assert ids(await case.store.history(case.conv("a"), 0, 10)) == ids(batch[:1])
    finally:
        await gen.aclose()


@pytest.mark.integration
async def test_mongo_writes_are_majority_and_journaled_unless_the_url_says(
    mongo_url: str,
) -> None:
    durable = WriteConcern(w="majority", j=True)
    gen = _mongo(mongo_url)
    case = await anext(gen)
    try:
        store: MongoMessageStore = case.store
        assert store.collection.write_concern == durable
        assert store.dead_letter_collection.write_concern == durable
        # The server takes it (SecantusDB: a one-node replica set).
        await store.insert_many([case.msg(1, "a", 1)])
        assert await store.last_seqs([case.conv("a")]) == {case.conv("a"): 1}
        await store.put_dead_letters([case.letter(1, at=1)])
    finally:
        await gen.aclose()
    for option, expected in (
        ("w=1", WriteConcern(w=1)),
        ("journal=false", WriteConcern(j=False)),
        ("wtimeoutMS=2500", WriteConcern(wtimeout=2500)),
    ):
        store = MongoMessageStore(f"{mongo_url}&{option}", database="im_test_unused")
        try:
            assert store.collection.write_concern == expected, option
            assert store.dead_letter_collection.write_concern == expected, option
        finally:
            await store.close()


# ------------------------------------------------------------- store unreachable


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _every_call(store: Any) -> list[Callable[[], Awaitable[Any]]]:
    """Each public call that reaches the store."""
    m = wire_pb2.Message(msg_id=1, conversation_id="d:1:2", seq=1, body=b"x")
    letter = DeadLetter("l", "t", 0, 0, "k", b"v", "r", 1)
    return [
        lambda: store.insert_many([m]),
        lambda: store.get_by_msg_ids([1]),
        lambda: store.last_seqs(["d:1:2"]),
        lambda: store.history("d:1:2", 0, 10),
        lambda: store.put_dead_letters([letter]),
        lambda: store.dead_letters(10),
    ]


async def test_mongo_down_fails_within_seconds_by_default() -> None:
    # No timeout in the URL: the adapter's own bounds apply (pymongo's default server
    # selection alone would wait 30 s).
    store = MongoMessageStore(f"mongodb://127.0.0.1:{_closed_port()}/im")
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as err:
            await store.insert_many([wire_pb2.Message(msg_id=1, conversation_id="c", seq=1)])
        assert time.monotonic() - started < 10
        assert err.value.backend == "message store" and err.value.__cause__ is not None
    finally:
        await store.close()


async def test_mongo_down_is_backend_unavailable_for_every_call() -> None:
    url = f"mongodb://127.0.0.1:{_closed_port()}/im?serverSelectionTimeoutMS=200"
    store = MongoMessageStore(url)
    try:
        for call in _every_call(store):
            with pytest.raises(BackendUnavailable):
                await call()
    finally:
        await store.close()


async def test_mongo_unhealthy_when_unreachable() -> None:
    # No server needed: a port nothing listens on; healthy() answers False in time.
    store = MongoMessageStore("mongodb://127.0.0.1:1/im?serverSelectionTimeoutMS=200")
    try:
        assert await store.healthy(timeout=1.0) is False
    finally:
        await store.close()


async def test_mysql_down_is_backend_unavailable_for_every_call() -> None:
    url = f"mysql+pymysql://im_test:im_test@127.0.0.1:{_closed_port()}/im_test"
    with pytest.raises(BackendUnavailable):
        SqlMessageStore(url)  # creating the schema needs the server
    store = SqlMessageStore(url, auto_migrate=False)
    try:
        for call in _every_call(store):
            with pytest.raises(BackendUnavailable) as err:
                await call()
            assert err.value.backend == "message store"
        assert await store.healthy() is False
    finally:
        await store.close()


async def test_attachment_ids_are_stored_with_the_message(case: Case) -> None:
    with_files = case.msg(1, "a", 1)
    with_files.attachment_ids.extend(["A" * 22, "b-_" + "c" * 19])
    plain = case.msg(2, "a", 2)
    await case.store.insert_many([with_files, plain])
    got = await case.store.history(case.conv("a"), 0, 10)
    assert [list(m.attachment_ids) for m in got] == [["A" * 22, "b-_" + "c" * 19], []]
    by_id = await case.store.get_by_msg_ids([with_files.msg_id])
    assert by_id[with_files.msg_id] == with_files
