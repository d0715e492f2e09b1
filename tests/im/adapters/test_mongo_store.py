"""MongoMessageStore's indexes (``im.adapters.mongo_indexes``): only the unique seq
index holds up the first call; the others are built in the background, retried, and
until they exist every call still works. Integration tests on the test server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import NetworkTimeout

from im import events
from im.adapters.mongo_indexes import (
    BACKFILL_EVERY_SECONDS,
    DEAD_LETTER_INDEX,
    REFERS_INDEX,
    RETRY_FIRST_SECONDS,
    SEQ_INDEX,
)
from im.adapters.mongo_search import SEARCH_INDEX, MongoSearch
from im.clock import FakeClock
from im.search import parse_query
from tests.im.adapters.test_message_events_contract import event
from tests.im.adapters.test_message_store_contract import Case, _mongo

pytestmark = pytest.mark.integration

SPEED_INDEXES = {SEARCH_INDEX, REFERS_INDEX}


@asynccontextmanager
async def mongo_case(url: str, clock: FakeClock) -> AsyncIterator[Case]:
    gen = _mongo(url, clock=clock)
    try:
        yield await anext(gen)
    finally:
        await gen.aclose()


async def index_names(collection: AsyncCollection) -> set[str]:
    return set(await collection.index_information())


async def test_a_failing_index_build_holds_up_no_insert_and_is_tried_again(
    mongo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a build on a large collection does: it runs past the socket timeout.
    builds: list[int] = []
    create_index = MongoSearch.create_index

    async def times_out_once(self: MongoSearch) -> None:
        builds.append(1)
        if len(builds) == 1:
            raise NetworkTimeout("timed out")
        await create_index(self)

    monkeypatch.setattr(MongoSearch, "create_index", times_out_once)
    clock = FakeClock()
    async with mongo_case(mongo_url, clock) as case:
        await case.store.insert_many([case.msg(1, "a", 1)])
        assert [m.seq for m in await case.store.history(case.conv("a"), 0, 10)] == [1]
        assert await clock.wait_for_sleep() == RETRY_FIRST_SECONDS  # the backoff
        assert not SPEED_INDEXES & await index_names(case.store.collection)
        clock.advance(RETRY_FIRST_SECONDS)
        assert await clock.wait_for_sleep() == BACKFILL_EVERY_SECONDS  # built: backfilled
        assert SPEED_INDEXES <= await index_names(case.store.collection)
        assert len(builds) == 2


async def test_every_call_works_while_the_index_builds_hang(
    mongo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_index = AsyncCollection.create_index
    hanging = asyncio.Event()

    async def hangs_but_seq(self: AsyncCollection, keys: Any, **kwargs: Any) -> str:
        if kwargs.get("name") == SEQ_INDEX:
            return await create_index(self, keys, **kwargs)
        hanging.set()
        await asyncio.Event().wait()  # until the store closes
        raise AssertionError("unreachable")

    monkeypatch.setattr(AsyncCollection, "create_index", hangs_but_seq)
    clock = FakeClock()
    async with mongo_case(mongo_url, clock) as case:
        s = case.store
        edit = event(case, 2, "a", 2, events.EDIT, 1, b"edited secret")
        recall = event(case, 3, "a", 3, events.RECALL, 1)
        await s.insert_many([case.msg(1, "a", 1, b"secret"), edit, recall])
        await hanging.wait()
        assert not SPEED_INDEXES & await index_names(s.collection)
        # A recall finds the edits of its target without the refers_to index.
        assert await s.apply_events([edit]) == []
        assert await s.apply_events([recall]) == []
        got = await s.get_by_msg_ids([case.base_id + 1, case.base_id + 2])
        assert got[case.base_id + 1].recalled and got[case.base_id + 2].body == b""
        await s.insert_many([case.msg(4, "a", 4, b"still searchable")])
        found = await s.search({case.conv("a"): 0}, parse_query("searchable"), 0, 10)
        assert [m.msg_id for m in found] == [case.base_id + 4]
        await s.put_dead_letters([case.letter(1, at=1), case.letter(2, at=2)])
        assert [x.at_ms for x in await s.dead_letters(10)] == [case.base_ms + 2, case.base_ms + 1]
        assert DEAD_LETTER_INDEX not in await index_names(s.dead_letter_collection)
