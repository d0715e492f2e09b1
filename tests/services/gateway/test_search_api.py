"""GET /v1/search: the caller's conversations only, each from its join point, hostile
queries refused, pages, snippets, and a store that fails or hangs is a 503."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from im.v1 import wire_pb2
from tests.services.gateway.conftest import Suite
from tests.services.gateway.helpers import assert_problem, message

Headers = dict[str, str]


async def direct(suite: Suite, headers: Headers, peer_id: int) -> str:
    r = await suite.client.post(
        "/v1/conversations/direct", json={"peer_id": peer_id}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()["conversation_id"]


async def group(
    suite: Suite, headers: Headers, member_ids: list[int], visible: bool = False
) -> str:
    r = await suite.client.post(
        "/v1/groups",
        json={"name": "team", "member_ids": member_ids, "history_visible": visible},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return r.json()["conversation_id"]


async def add(suite: Suite, headers: Headers, gid: str, user_id: int) -> None:
    r = await suite.client.post(
        f"/v1/groups/{gid}/members", json={"user_ids": [user_id]}, headers=headers
    )
    assert r.status_code == 200, r.text


async def search(suite: Suite, headers: Headers, q: str, **params: Any) -> dict:
    r = await suite.client.get("/v1/search", params={"q": q, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def texts(page: dict) -> list[str]:
    return [hit["message"]["text"] for hit in page["results"]]


async def test_members_find_their_messages_strangers_nothing(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    _, mallory = await suite.user("mallory")
    cid = await direct(suite, alice, bob_id)
    await suite.store.insert_many(
        [
            message(cid, 1, alice_id, b"Lunch at the harbour?"),
            message(cid, 2, bob_id, b"yes, harbour at noon"),
            message(cid, 3, bob_id, b"recall", "application/vnd.im.recall"),
        ]
    )
    for headers in (alice, bob):
        page = await search(suite, headers, "HARBOUR")
        assert texts(page) == ["yes, harbour at noon", "Lunch at the harbour?"]
        assert page["next_cursor"] is None
        hit = page["results"][0]
        assert hit["message"]["conversation_id"] == cid and hit["message"]["seq"] == 2
        assert isinstance(hit["message"]["msg_id"], str)
        start, end = hit["snippet"]["highlights"][0]
        assert hit["snippet"]["text"][start:end] == "harbour"
    assert (await search(suite, alice, "recall"))["results"] == []
    assert (await search(suite, mallory, "harbour"))["results"] == []
    # Naming a conversation one is not in is refused, as for history.
    r = await suite.client.get(
        "/v1/search", params={"q": "harbour", "conversation_id": cid}, headers=mallory
    )
    assert_problem(r, 403, "forbidden")
    r = await suite.client.get(
        "/v1/search", params={"q": "harbour", "conversation_id": "nonsense"}, headers=mallory
    )
    assert_problem(r, 404, "not_found")


async def test_a_later_member_finds_only_what_came_after_joining(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    dave_id, dave = await suite.user("dave")
    erin_id, erin = await suite.user("erin")
    closed = await group(suite, alice, [])
    opened = await group(suite, alice, [], visible=True)
    await suite.store.insert_many([message(closed, 1, alice_id, b"early plan closed")])
    await suite.store.insert_many([message(opened, 1, alice_id, b"early plan open")])
    await add(suite, alice, closed, dave_id)
    await add(suite, alice, opened, dave_id)
    await suite.store.insert_many([message(closed, 2, alice_id, b"later plan closed")])
    assert texts(await search(suite, dave, "plan")) == [
        "later plan closed",
        "early plan open",
    ]
    assert texts(await search(suite, dave, "plan", conversation_id=closed)) == ["later plan closed"]
    assert texts(await search(suite, alice, "early plan", conversation_id=closed)) == [
        "early plan closed"
    ]
    assert (await search(suite, erin, "plan"))["results"] == []
    assert erin_id


async def test_pages_newest_first(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, _ = await suite.user("bob")
    cid = await direct(suite, alice, bob_id)
    await suite.store.insert_many(
        [message(cid, s, alice_id, f"note {s}".encode()) for s in range(1, 6)]
    )
    first = await search(suite, alice, "note", limit=2)
    assert texts(first) == ["note 5", "note 4"] and first["next_cursor"]
    second = await search(suite, alice, "note", limit=2, cursor=first["next_cursor"])
    assert texts(second) == ["note 3", "note 2"]
    third = await search(suite, alice, "note", limit=2, cursor=second["next_cursor"])
    assert texts(third) == ["note 1"] and third["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"q": ""},
        {"q": "x" * 257},
        {"q": "*** ((( ---"},
        {"q": " ".join(f"w{i}" for i in range(9))},
        {"q": "y" * 65},
        {"q": "ok", "limit": 0},
        {"q": "ok", "limit": 101},
        {"q": "ok", "cursor": "-1"},
        {"q": "ok", "cursor": "abc"},
        {"q": "ok", "cursor": "99999999999999999999"},
        {"q": "ok", "conversation_id": "c" * 65},
    ],
)
async def test_hostile_queries_are_422(suite: Suite, params: dict) -> None:
    _, alice = await suite.user("alice")
    r = await suite.client.get("/v1/search", params=params, headers=alice)
    assert_problem(r, 422, "invalid_request")


async def test_query_syntax_is_just_words(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, _ = await suite.user("bob")
    cid = await direct(suite, alice, bob_id)
    await suite.store.insert_many(
        [message(cid, 1, alice_id, b"alpha beta"), message(cid, 2, alice_id, b"gamma")]
    )
    for q in ('alpha" OR "gamma', "alpha OR gamma", "NEAR(alpha gamma)", "alp*", "a%"):
        assert (await search(suite, alice, q))["results"] == [], q
    assert texts(await search(suite, alice, '"alpha"* -beta')) == ["alpha beta"]


async def test_needs_a_login(suite: Suite) -> None:
    assert_problem(await suite.client.get("/v1/search", params={"q": "x"}), 401, "unauthorized")


class _Store:
    """A message store whose search fails, or never answers."""

    def __init__(self, hang: bool) -> None:
        self.hang = hang

    async def search(self, *args: Any) -> list[wire_pb2.Message]:
        if self.hang:
            await asyncio.Event().wait()
        raise ConnectionError("store down")


@pytest.mark.parametrize("settings_overrides", [{"search_timeout": 0.2}])
@pytest.mark.parametrize("hang", [False, True], ids=["fails", "hangs"])
async def test_a_failing_or_hung_store_is_503(suite: Suite, hang: bool) -> None:
    _, alice = await suite.user("alice")
    bob_id, _ = await suite.user("bob")
    await direct(suite, alice, bob_id)
    suite.gateway.gateway.search_ops._messages = _Store(hang)  # type: ignore[assignment]
    r = await suite.client.get("/v1/search", params={"q": "anything"}, headers=alice)
    assert_problem(r, 503, "unavailable")


@pytest.mark.parametrize("settings_overrides", [{"searches_per_minute": 2}])
async def test_searches_are_rate_limited_per_user(suite: Suite) -> None:
    _, alice = await suite.user("alice")
    _, bob = await suite.user("bob")
    await search(suite, alice, "lunch")
    await search(suite, alice, "lunch")
    r = await suite.client.get("/v1/search", params={"q": "lunch"}, headers=alice)
    assert_problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) > 0
    await search(suite, bob, "lunch")  # someone else's searches are not counted


class _BlockedStore:
    """A message store whose searches wait in a worker thread (as the SQL store's do)
    until ``release``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = 0

    async def search(self, *args: Any) -> list[wire_pb2.Message]:
        self.entered += 1
        await asyncio.to_thread(self.release.wait, 30)
        return []


@pytest.mark.parametrize("settings_overrides", [{"search_timeout": 0.05, "search_concurrency": 1}])
async def test_a_search_keeps_its_slot_until_the_store_returns(suite: Suite) -> None:
    _, alice = await suite.user("alice")
    bob_id, _ = await suite.user("bob")
    await direct(suite, alice, bob_id)
    store = _BlockedStore()
    suite.gateway.gateway.search_ops._messages = store  # type: ignore[assignment]
    # Timed out: the answer is a 503, but the store's call goes on...
    r = await suite.client.get("/v1/search", params={"q": "lunch"}, headers=alice)
    assert_problem(r, 503, "unavailable")
    # ...so the next search is turned away at once, not given to the store.
    r = await suite.client.get("/v1/search", params={"q": "lunch"}, headers=alice)
    assert_problem(r, 503, "unavailable")
    assert r.headers["retry-after"] == "1"
    assert store.entered == 1
    store.release.set()
    await asyncio.gather(*suite.gateway.gateway.search_ops.slots.running)
    assert (await search(suite, alice, "lunch"))["results"] == []


async def test_many_searches_never_starve_history(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, _ = await suite.user("bob")
    cid = await direct(suite, alice, bob_id)
    await suite.store.insert_many([message(cid, 1, alice_id, b"still here")])
    store = _BlockedStore()
    suite.gateway.gateway.search_ops._messages = store  # type: ignore[assignment]
    slots = suite.settings.search_concurrency
    # More than any default thread pool has threads (at most 32).
    many = [
        asyncio.create_task(suite.client.get("/v1/search", params={"q": "a is the"}, headers=alice))
        for _ in range(40)
    ]
    try:
        pending = set(many)
        async with asyncio.timeout(10):
            while len(pending) > slots:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        turned_away = [t.result() for t in many if t not in pending]
        assert {r.status_code for r in turned_away} <= {429, 503}
        assert store.entered == slots
        # The searches hold their threads; history (a group service call in a
        # worker thread, then the store) still answers.
        async with asyncio.timeout(10):
            r = await suite.client.get(f"/v1/conversations/{cid}/messages", headers=alice)
        assert r.status_code == 200 and r.json()["messages"][0]["text"] == "still here"
    finally:
        store.release.set()
        answers = await asyncio.gather(*many)
    assert sum(r.status_code == 200 for r in answers) == slots
