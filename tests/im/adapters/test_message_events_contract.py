"""The message store's ``apply_events`` (recalls and edits), against every adapter:
SQLite, and as integration tests MariaDB (a temporary table, see ``_mariadb``) and
MongoDB (a database of its own), with the store contract's namespaces."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateTable

from im import events
from im.adapters.sqlstore import SqlMessageStore
from im.db import MessageRow
from im.v1 import wire_pb2
from tests.im.adapters import test_message_store_contract as contract
from tests.im.adapters.test_message_store_contract import Case


async def _mariadb(url: str) -> AsyncIterator[Case]:
    """The SQL store on MariaDB, in a TEMPORARY ``messages`` table of its one
    connection: it shadows the shared table, so these tests need no migration of the
    shared test database (other branches' schema versions live there) and leave
    nothing behind."""
    engine = create_engine(url, poolclass=StaticPool, pool_pre_ping=False)
    ddl = str(CreateTable(MessageRow.__table__).compile(engine))
    with engine.begin() as connection:
        connection.execute(text(ddl.replace("CREATE TABLE", "CREATE TEMPORARY TABLE", 1)))
    store = SqlMessageStore(engine=engine, auto_migrate=False)
    try:
        yield Case("mariadb", store, *contract._namespace())
    finally:
        await store.close()  # the temporary table ends with its connection


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("mariadb", id="mariadb", marks=pytest.mark.integration),
        pytest.param("mongo", id="mongo", marks=pytest.mark.integration),
    ]
)
async def case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Case]:
    if request.param == "sqlite":
        gen = contract._sqlite(tmp_path)
    elif request.param == "mariadb":
        gen = _mariadb(request.getfixturevalue("mysql_url"))
    else:
        gen = contract._mongo(request.getfixturevalue("mongo_url"))
    item = await anext(gen)
    try:
        yield item
    finally:
        await gen.aclose()


def event(case: Case, n: int, conv: str, seq: int, kind: str, target: int, body: bytes = b""):
    m = case.msg(n, conv, seq, body)
    m.content_type, m.refers_to = kind, case.base_id + target
    return m


async def stored(case: Case, *ns: int) -> list[wire_pb2.Message]:
    got = await case.store.get_by_msg_ids([case.base_id + n for n in ns])
    return [got[case.base_id + n] for n in ns]


async def test_events_round_trip_with_their_fields(case: Case) -> None:
    s = case.store
    recall = event(case, 2, "a", 2, events.RECALL, 1)
    edited = case.msg(3, "a", 3)
    edited.edited_at, edited.recalled = 1_800_000_000_123, True
    await s.insert_many([case.msg(1, "a", 1), recall, edited])
    assert await stored(case, 2, 3) == [recall, edited]
    assert await s.apply_events([]) == []


async def test_a_recall_erases_the_body_and_keeps_the_row(case: Case) -> None:
    s = case.store
    recall = event(case, 3, "a", 3, events.RECALL, 1)
    await s.insert_many([case.msg(1, "a", 1, b"secret"), case.msg(2, "a", 2), recall])
    assert await s.apply_events([recall]) == []
    history = await s.history(case.conv("a"), 0, 10)
    assert [m.seq for m in history] == [1, 2, 3]  # no gap: the row stays
    original = history[0]
    assert original.recalled and original.body == b"" and original.content_type == "text/plain"
    assert history[1].body == b"body 2" and not history[1].recalled
    assert history[2] == recall  # the event itself is a message like any other
    # Applied again (a replay after a router restart): nothing more changes.
    assert await s.apply_events([recall]) == []
    assert await s.history(case.conv("a"), 0, 10) == history


async def test_an_edit_replaces_the_body_and_sets_edited_at(case: Case) -> None:
    s = case.store
    first = event(case, 2, "a", 2, events.EDIT, 1, b"second text")
    second = event(case, 3, "a", 3, events.EDIT, 1, b"third text")
    await s.insert_many([case.msg(1, "a", 1, b"first text"), first, second])
    assert await s.apply_events([first, second]) == []
    (m,) = await stored(case, 1)
    assert m.body == b"third text" and m.edited_at == second.server_ts and not m.recalled
    # A replay of the older edit alone (or of both) never brings its text back.
    await s.apply_events([first])
    await s.apply_events([first, second])
    assert await stored(case, 1) == [m]


async def test_a_recall_erases_the_edits_text_and_later_edits_change_nothing(case: Case) -> None:
    s = case.store
    edit = event(case, 2, "a", 2, events.EDIT, 1, b"edited secret")
    recall = event(case, 3, "a", 3, events.RECALL, 1)
    late = event(case, 4, "a", 4, events.EDIT, 1, b"too late")
    other = case.msg(5, "a", 5, b"untouched")
    await s.insert_many([case.msg(1, "a", 1, b"secret"), edit, recall, late, other])
    assert await s.apply_events([edit]) == []
    assert await s.apply_events([recall, late]) == []
    original, edit_now, recall_now, late_now, other_now = await stored(case, 1, 2, 3, 4, 5)
    assert original.recalled and original.body == b""
    assert edit_now.body == b"" and edit_now.refers_to == original.msg_id
    assert late_now.body == b"" and recall_now == recall
    assert other_now == other
    # And all of it again, in one batch, as a replay would.
    await s.apply_events([edit, recall, late])
    assert await stored(case, 1, 2, 3, 4, 5) == [original, edit_now, recall_now, late_now, other]


async def test_events_without_a_target_change_nothing_and_are_named(case: Case) -> None:
    s = case.store
    a1, b1 = case.msg(1, "a", 1), case.msg(2, "b", 1)
    missing = event(case, 3, "a", 2, events.RECALL, 999)
    elsewhere = event(case, 4, "a", 3, events.EDIT, 2, b"not yours")  # b1 is in "b"
    at_event = event(case, 5, "a", 4, events.RECALL, 3)  # a recall of an event
    good = event(case, 6, "a", 5, events.EDIT, 1, b"fine")
    await s.insert_many([a1, missing, elsewhere, at_event, good])
    await s.insert_many([b1])
    orphans = await s.apply_events([missing, elsewhere, at_event, good])
    assert orphans == [missing.msg_id, elsewhere.msg_id, at_event.msg_id]
    b_now, missing_now = await stored(case, 2, 3)
    assert b_now == b1 and missing_now == missing
    (a_now,) = await stored(case, 1)
    assert a_now.body == b"fine"
