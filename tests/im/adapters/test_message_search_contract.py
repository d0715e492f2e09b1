"""Message search, the same contract on every message store adapter (the ``case``
fixture of test_message_store_contract: SQLite FTS5, MariaDB FULLTEXT, MongoDB keyword
index), plus what each backend does underneath."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from bson import Int64
from sqlalchemy import create_engine, event, func, inspect, select, text, update
from sqlalchemy.dialects import mysql

from im.adapters.mongo_search import BACKFILL_MIN_PAUSE, SEARCH_INDEX, MongoSearch
from im.adapters.mongo_store import MongoMessageStore
from im.adapters.sql_search import SqlSearch, boolean_query, fts5_query, like_pattern
from im.adapters.sqlstore import SqlMessageStore
from im.clock import FakeClock
from im.db import SEARCH_COLUMN, MessageRow, create_schema
from im.db import SEARCH_INDEX as SQL_SEARCH_INDEX
from im.ports import BackendUnavailable
from im.search import parse_query
from im.v1 import wire_pb2
from tests.im.adapters.test_message_store_contract import (
    Case,
    _from,
    _mariadb,
    _mongo,
    _sqlite,
)

_MIGRATION = importlib.import_module("im.migrations.versions.0008_search")


@pytest.fixture(autouse=True)
def _mariadb_search_schema(request: pytest.FixtureRequest) -> Iterator[None]:
    """The MariaDB ``messages`` table is shared with other branches whose migrations
    may hold the revision slot: add the search column and index for this test (what
    migration 0008_search does) if they are missing, and take them away after."""
    callspec = getattr(request.node, "callspec", None)
    wanted = callspec is not None and callspec.params.get("case") == "mariadb"
    if not wanted and "mysql_url" not in request.fixturenames:
        yield
        return
    engine = create_engine(request.getfixturevalue("mysql_url"))
    added = False
    try:
        if not inspect(engine).has_table("messages"):
            create_schema(engine)  # the first test on this database: no store made it yet
        columns = {c["name"] for c in inspect(engine).get_columns("messages")}
        if SEARCH_COLUMN not in columns:
            with engine.begin() as conn:
                conn.execute(text(_MIGRATION._MYSQL_COLUMN))
                conn.execute(
                    text(f"CREATE FULLTEXT INDEX {SQL_SEARCH_INDEX} ON messages (search_text)")
                )
            added = True
        yield
    finally:
        if added:
            with engine.begin() as conn:
                conn.execute(text(f"DROP INDEX {SQL_SEARCH_INDEX} ON messages"))
                conn.execute(text(f"ALTER TABLE messages DROP COLUMN {SEARCH_COLUMN}"))
        engine.dispose()


@pytest.fixture(
    name="case",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("mariadb", id="mariadb", marks=pytest.mark.integration),
        pytest.param("mongo", id="mongo", marks=pytest.mark.integration),
    ],
)
async def _case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Case]:
    """The stores of test_message_store_contract, each in a namespace of its own."""
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


def found(messages: list[wire_pb2.Message]) -> list[int]:
    return [m.msg_id for m in messages]


async def put(case: Case, *specs: tuple[int, str, int, str]) -> None:
    """Messages (n, conversation, seq, text) as text/plain."""
    await case.store.insert_many([case.msg(n, c, seq, body.encode()) for n, c, seq, body in specs])


async def search(case: Case, scope: dict[str, int], query: str, before: int = 0, limit: int = 20):  # type: ignore[no-untyped-def]
    full = {case.conv(c): after for c, after in scope.items()}
    return found(await case.store.search(full, parse_query(query), before, limit))


async def erase_body(case: Case, n: int) -> None:
    """What a recall does to the stored row: the body is emptied in place."""
    msg_id = case.base_id + n
    if isinstance(case.store, SqlMessageStore):

        def run() -> None:
            with case.store._engine.begin() as conn:
                conn.execute(update(MessageRow).where(MessageRow.msg_id == msg_id).values(body=b""))

        await asyncio.to_thread(run)
    else:
        await case.store.collection.update_one({"_id": Int64(msg_id)}, {"$set": {"body": b""}})


async def test_every_word_must_appear_newest_first(case: Case) -> None:
    await put(
        case,
        (1, "a", 1, "Lunch at the harbour tomorrow?"),
        (2, "a", 2, "harbour lunch sounds good"),
        (3, "b", 1, "The HARBOUR is closed"),
        (4, "b", 2, "nothing to see"),
    )
    b = case.base_id
    assert await search(case, {"a": 0, "b": 0}, "harbour") == [b + 3, b + 2, b + 1]
    assert await search(case, {"a": 0, "b": 0}, "lunch harbour") == [b + 2, b + 1]
    assert await search(case, {"a": 0, "b": 0}, "harbour submarine") == []


async def test_case_and_accents_do_not_matter(case: Case) -> None:
    await put(case, (1, "a", 1, "Rendez-vous au Café Münster"))
    b = case.base_id
    assert await search(case, {"a": 0}, "cafe") == [b + 1]
    assert await search(case, {"a": 0}, "MUNSTER café") == [b + 1]


async def test_only_conversations_in_scope_and_after_the_join_point(case: Case) -> None:
    await put(
        case,
        (1, "a", 1, "secret plan one"),
        (2, "a", 2, "secret plan two"),
        (3, "a", 3, "secret plan three"),
        (4, "other", 1, "secret plan elsewhere"),
    )
    b = case.base_id
    assert await search(case, {"a": 2}, "secret") == [b + 3]
    assert await search(case, {"a": 0}, "secret") == [b + 3, b + 2, b + 1]
    assert await search(case, {"a": 3}, "secret") == []
    assert await search(case, {"nothere": 0}, "secret") == []
    assert await case.store.search({}, ["secret"], 0, 10) == []


async def test_pages_go_back_by_msg_id(case: Case) -> None:
    await put(case, *[(n, "a", n, f"page word {n}") for n in range(1, 8)])
    b = case.base_id
    first = await search(case, {"a": 0}, "page", limit=3)
    assert first == [b + 7, b + 6, b + 5]
    assert await search(case, {"a": 0}, "page", before=first[-1], limit=3) == [b + 4, b + 3, b + 2]
    assert await search(case, {"a": 0}, "page", before=b + 2, limit=3) == [b + 1]


async def test_only_text_messages_are_searchable(case: Case) -> None:
    event = case.msg(1, "a", 1, b"recall this word")
    event.content_type = "application/vnd.im.recall"
    binary = case.msg(2, "a", 2, b"image word")
    binary.content_type = "image/png"
    markdown = case.msg(3, "a", 3, b"**word** in markdown")
    markdown.content_type = "text/markdown"
    await case.store.insert_many([event, binary, markdown])
    assert await search(case, {"a": 0}, "word") == [case.base_id + 3]


async def test_an_erased_body_no_longer_matches(case: Case) -> None:
    await put(case, (1, "a", 1, "regret this message"), (2, "a", 2, "keep this message"))
    b = case.base_id
    assert await search(case, {"a": 0}, "message") == [b + 2, b + 1]
    await erase_body(case, 1)
    assert await search(case, {"a": 0}, "message") == [b + 2]
    assert await search(case, {"a": 0}, "regret") == []
    # The row is still there for history, only its words are gone.
    assert (await case.store.history(case.conv("a"), 0, 10))[0].body == b""


async def test_an_erased_senders_messages_crowd_out_no_hits(case: Case) -> None:
    # More erased messages, newer than the one hit, than a search looks at per page:
    # they must be out of the index, not only filtered out of the answer.
    alice = case.base_id // 1024 + 7  # a sender id of this test alone (shared MariaDB)
    hit = case.msg(1, "a", 1, b"hello from bob")
    erased = [_from(case.msg(n, "a", n, b"hello from alice"), alice) for n in range(2, 202)]
    await case.store.insert_many([hit, *erased])
    assert await case.store.erase_sender(alice) == 200
    assert await search(case, {"a": 0}, "hello", limit=10) == [case.base_id + 1]


async def test_query_syntax_is_never_interpreted(case: Case) -> None:
    await put(
        case,
        (1, "a", 1, "alpha beta"),
        (2, "a", 2, "gamma delta"),
        (3, "a", 3, 'quote " and star * and NEAR(x y) OR'),
    )
    b = case.base_id
    # FTS5 / boolean-mode / regex operators are just separators between words.
    assert await search(case, {"a": 0}, "alpha OR gamma") == []
    assert await search(case, {"a": 0}, 'alpha" OR "gamma') == []
    assert await search(case, {"a": 0}, "-alpha beta") == [b + 1]
    assert await search(case, {"a": 0}, "NEAR(alpha beta)") == []
    assert await search(case, {"a": 0}, "alp*") == []
    assert await search(case, {"a": 0}, ".* gamma") == [b + 2]
    assert await search(case, {"a": 0}, "star* quote") == [b + 3]
    # Words handed in directly still cannot break out of their quotes (inside them,
    # punctuation only separates the words of a phrase).
    scope = {case.conv("a"): 0}
    for words in (['alpha" OR "gamma'], ["alp*"], ["a%"], [".*"], ["NEAR(alpha"], ["gam%"]):
        assert found(await case.store.search(scope, words, 0, 10)) == []


async def test_short_words_and_stopwords_are_found(case: Case) -> None:
    # InnoDB indexes neither words under 3 characters nor its stopwords.
    await put(case, (1, "a", 1, "go to the zoo"), (2, "a", 2, "the end"))
    b = case.base_id
    assert await search(case, {"a": 0}, "go zoo") == [b + 1]
    assert await search(case, {"a": 0}, "the") == [b + 2, b + 1]


async def test_undecodable_text_is_stored_and_searchable(case: Case) -> None:
    await put(case, (1, "a", 1, "fine words"))
    broken = case.msg(2, "a", 2, b"\xff\xfe broken words \xc3")
    await case.store.insert_many([broken])
    # Stored whatever its bytes; found where the backend can read it (SQLite and the
    # keyword index replace the bad bytes; MariaDB leaves such a body unindexed).
    hits = await search(case, {"a": 0}, "words")
    assert hits[-1] == case.base_id + 1 and set(hits) <= {case.base_id + 1, case.base_id + 2}
    assert (await case.store.history(case.conv("a"), 1, 1))[0].body == broken.body


# ------------------------------------------------------------------ quoting


def test_fts5_terms_are_quoted_strings() -> None:
    assert fts5_query(["alpha", 'x" OR "y']) == '"alpha" "x"" OR ""y"'


def test_boolean_mode_terms_are_required_phrases_without_quotes() -> None:
    assert boolean_query(["alpha", 'x" -y']) == '+"alpha" +"x -y"'


def test_like_patterns_escape_wildcards() -> None:
    assert like_pattern("50%_\\") == "%50\\%\\_\\\\%"


# ------------------------------------------------------------ per backend


async def test_sqlite_uses_fts5_and_backfills_existing_rows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = SqlMessageStore(url)
    try:
        assert store._search.strategy() == "fts5"
        # Rows stored before the index existed: drop it, store, run its migration again
        # (only that one: later migrations stay applied).
        with store._engine.begin() as conn:
            for trigger in ("insert", "update", "delete"):
                conn.execute(text(f"DROP TRIGGER message_search_{trigger}"))
            conn.execute(text("DROP TABLE message_search"))
        old = wire_pb2.Message(
            msg_id=7, conversation_id="c", seq=1, content_type="text/plain", body=b"old words"
        )
        await store.insert_many([old])
        with store._engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
            _MIGRATION.upgrade()
    finally:
        await store.close()
    store = SqlMessageStore(url)
    try:
        assert found(await store.search({"c": 0}, ["old"], 0, 10)) == [7]
        with store._engine.connect() as conn:
            conn.execute(
                text("INSERT INTO message_search(message_search) VALUES('integrity-check')")
            )
    finally:
        await store.close()


@pytest.mark.integration
async def test_mariadb_uses_fulltext(mysql_url: str) -> None:
    store = SqlMessageStore(mysql_url)
    try:
        assert store._search.strategy() == "fulltext"
        with store._engine.connect() as conn:
            ddl = conn.execute(text("SHOW CREATE TABLE messages")).one()[1]
        assert "FULLTEXT KEY `ft_messages_search` (`search_text`)" in ddl
    finally:
        await store.close()


def _legacy(case: Case, n: int, body: bytes) -> dict[str, object]:
    """A document as stored before search existed (or by an older version): no terms."""
    return {
        "_id": Int64(case.base_id + n),
        "conversation_id": case.conv("a"),
        "seq": Int64(n),
        "content_type": "text/plain",
        "body": body,
    }


@pytest.mark.integration
async def test_mongo_keyword_index_and_backfill(mongo_url: str) -> None:
    gen = _mongo(mongo_url)
    case = await anext(gen)
    try:
        store: MongoMessageStore = case.store
        await put(case, (1, "a", 1, "Indexed Words, indexed"))
        doc = await store.collection.find_one({"_id": case.base_id + 1})
        assert doc is not None and doc["search_terms"] == ["indexed", "words"]
        # A document stored before search existed is found once backfilled.
        await store.collection.insert_one(_legacy(case, 2, b"legacy words"))
        await store.backfill_search()  # the background's may have been first
        indexes = await store.collection.index_information()
        assert indexes[SEARCH_INDEX]["key"] == [("search_terms", 1), ("_id", -1)]
        assert await search(case, {"a": 0}, "legacy") == [case.base_id + 2]
        # And so is one stored after that, as an older version's router does during a
        # rolling upgrade: a backfill is never over for good.
        await store.collection.insert_one(_legacy(case, 3, b"rolling upgrade"))
        await store.backfill_search()
        assert await search(case, {"a": 0}, "upgrade") == [case.base_id + 3]
        assert await store.backfill_search() == 0
    finally:
        await gen.aclose()


@pytest.mark.integration
async def test_mongo_backfill_pauses_between_batches(mongo_url: str) -> None:
    gen = _mongo(mongo_url)
    case = await anext(gen)
    try:
        # Straight on the collection: no store call, so no backfill in the background.
        collection = case.store.collection
        await collection.insert_many([_legacy(case, n, b"old words") for n in range(1, 6)])
        clock = FakeClock()
        search = MongoSearch(collection, clock)
        await search.create_index()
        task = asyncio.create_task(search.backfill(batch=2))
        filled = {"search_terms": {"$ne": None}}
        for done in (2, 4):
            assert await clock.wait_for_sleep() == pytest.approx(BACKFILL_MIN_PAUSE)
            assert await collection.count_documents(filled) == done
            clock.advance(BACKFILL_MIN_PAUSE)
        assert await task == 5
        assert await collection.count_documents(filled) == 5
    finally:
        await gen.aclose()


@pytest.mark.integration
async def test_mongo_skips_recalled_documents(mongo_url: str) -> None:
    gen = _mongo(mongo_url)
    case = await anext(gen)
    try:
        await put(case, (1, "a", 1, "taken back"), (2, "a", 2, "taken along"))
        await case.store.collection.update_one(
            {"_id": Int64(case.base_id + 1)}, {"$set": {"recalled": True}}
        )
        assert await search(case, {"a": 0}, "taken") == [case.base_id + 2]
    finally:
        await gen.aclose()


def test_mysql_searches_carry_the_execution_time_hint() -> None:
    search = SqlSearch(create_engine("mysql+pymysql://nobody@127.0.0.1:9/none"), 2.5)
    search._strategy, search._server = "fulltext", "mysql"  # as detected on MySQL
    sql = str(search.time_limited(select(MessageRow.msg_id)).compile(dialect=mysql.dialect()))
    assert sql.startswith("SELECT /*+ MAX_EXECUTION_TIME(2500) */ messages.msg_id")


@pytest.mark.integration
async def test_mariadb_stops_a_search_at_its_time_limit(
    mysql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway stops waiting after search_timeout; the server stops the query."""
    gen = _mariadb(mysql_url, search_timeout=0.3)
    case = await anext(gen)
    sent: list[str] = []
    try:
        await put(case, (1, "a", 1, "harbour lunch"))
        event.listen(case.store._engine, "after_cursor_execute", lambda *args: sent.append(args[2]))
        assert await search(case, {"a": 0}, "harbour") == [case.base_id + 1]
        assert sent[-1].startswith("SET STATEMENT max_statement_time=0.300 FOR SELECT ")
        # A search that would take 5 s (SLEEP for each row it looks at) is stopped.
        words = SqlSearch._word_clauses
        monkeypatch.setattr(
            SqlSearch, "_word_clauses", lambda s, t: [*words(s, t), func.sleep(5) == 0]
        )
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="max_statement_time"):
            await search(case, {"a": 0}, "harbour")
        assert time.monotonic() - started < 3
        # Other statements on the store's connections have no limit.
        with case.store._engine.connect() as conn:
            assert conn.execute(text("SELECT SLEEP(0.5)")).scalar() == 0
            assert not sent[-1].startswith("SET STATEMENT")
    finally:
        await gen.aclose()
