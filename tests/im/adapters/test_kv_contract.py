"""One contract for presence, revoked sessions and idempotency keys.

Every test runs against the in-process ``MemoryKV`` (time moved by a FakeClock) and
against ``RedisKV`` on a real Redis (integration; real TTLs and a short wait), each
Redis test under its own random key prefix, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.exceptions

from im.adapters.memory import MemoryKV
from im.adapters.redis_kv import POOL_SIZE, RedisKV
from im.clock import FakeClock
from im.free_ports import free_port
from im.ports import BackendUnavailable, Backoff

# Short TTLs keep the Redis runs quick; long ones are "forever" for a test.
SHORT = 0.4
LONG = 60.0


@dataclass
class KV:
    """The adapter under test and a way to let time pass for it."""

    store: Any  # MemoryKV | RedisKV: Presence + SessionStore + IdempotencyStore
    wait: Callable[[float], Awaitable[None]]


async def _memory() -> AsyncIterator[KV]:
    clock = FakeClock()

    async def wait(seconds: float) -> None:
        clock.advance(seconds)

    yield KV(MemoryKV(clock), wait)


async def _redis(url: str) -> AsyncIterator[KV]:
    prefix = f"imtest:{uuid.uuid4().hex[:12]}:"
    kv = RedisKV(url, prefix=prefix)
    try:
        yield KV(kv, asyncio.sleep)
    finally:
        client = kv._redis
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        await kv.close()


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.integration),
    ]
)
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[KV]:
    if request.param == "memory":
        gen = _memory()
    else:
        gen = _redis(request.getfixturevalue("redis_url"))
    item = await anext(gen)
    try:
        yield item
    finally:
        await gen.aclose()


def routes_of(routes: dict, user_id: int) -> set[tuple[str, str]]:
    return {(r.device_id, r.connector_id) for r in routes.get(user_id, [])}


# ------------------------------------------------------------------- presence


async def test_connect_returns_the_previous_connector(kv: KV) -> None:
    p = kv.store
    assert await p.connect(1, "phone", "c1", LONG) is None
    assert await p.connect(1, "phone", "c2", LONG) == "c1"
    assert await p.connect(1, "phone", "c2", LONG) == "c2"  # reconnect to the same one
    # Another device of the same user is independent.
    assert await p.connect(1, "laptop", "c3", LONG) is None
    assert routes_of(await p.routes([1]), 1) == {("phone", "c2"), ("laptop", "c3")}


async def test_connect_after_expiry_has_no_previous(kv: KV) -> None:
    p = kv.store
    await p.connect(1, "phone", "c1", SHORT)
    await kv.wait(SHORT + 0.3)
    assert await p.connect(1, "phone", "c2", LONG) is None


async def test_disconnect_only_by_the_owner(kv: KV) -> None:
    p = kv.store
    await p.connect(1, "phone", "c1", LONG)
    await p.connect(1, "phone", "c2", LONG)  # moved to c2
    await p.disconnect(1, "phone", "c1")  # c1's late goodbye must not remove it
    assert routes_of(await p.routes([1]), 1) == {("phone", "c2")}
    await p.disconnect(1, "phone", "c2")
    assert await p.routes([1]) == {}
    # Unknown user / device: nothing happens.
    await p.disconnect(1, "phone", "c2")
    await p.disconnect(99, "tablet", "c1")


async def test_refresh_extends_ours_recreates_lost_ones_and_leaves_others(kv: KV) -> None:
    p = kv.store
    await p.connect(1, "phone", "c1", SHORT)
    await p.connect(2, "phone", "c1", SHORT)
    await p.connect(3, "phone", "c2", SHORT)  # the device moved to another connector
    await p.refresh([(1, "phone"), (2, "phone"), (3, "phone"), (4, "lost")], "c1", LONG)
    await kv.wait(SHORT + 0.3)
    routes = await p.routes([1, 2, 3, 4])
    assert routes_of(routes, 1) == {("phone", "c1")}
    assert routes_of(routes, 2) == {("phone", "c1")}
    assert 3 not in routes  # c1 did not take over c2's live entry; it expired since
    # An entry the store lost (a restart) is written again by the connector holding it.
    assert routes_of(routes, 4) == {("lost", "c1")}
    await p.refresh([(3, "phone")], "c1", LONG)  # expired now: c1 holds it again
    assert routes_of(await p.routes([3]), 3) == {("phone", "c1")}
    await p.refresh([], "c1", LONG)  # no-op


async def test_instance_names_the_current_incarnation(kv: KV) -> None:
    first = await kv.store.instance()
    assert first and await kv.store.instance() == first


async def test_routes_for_many_users(kv: KV) -> None:
    p = kv.store
    for user in range(1, 51):
        await p.connect(user, "phone", f"c{user % 3}", LONG)
        if user % 2 == 0:
            await p.connect(user, "web", "c9", LONG)
    routes = await p.routes([*range(1, 51), 1000, 1001])
    assert set(routes) == set(range(1, 51))  # users with no devices are left out
    assert routes_of(routes, 7) == {("phone", "c1")}
    assert routes_of(routes, 8) == {("phone", "c2"), ("web", "c9")}
    assert await p.routes([]) == {}
    assert await p.routes([1000]) == {}


async def test_expired_entries_are_not_routes(kv: KV) -> None:
    p = kv.store
    await p.connect(1, "phone", "c1", SHORT)
    await p.connect(1, "web", "c2", LONG)
    await p.connect(2, "phone", "c1", SHORT)
    assert set(await p.routes([1, 2])) == {1, 2}
    await kv.wait(SHORT + 0.3)
    routes = await p.routes([1, 2])
    assert routes_of(routes, 1) == {("web", "c2")}
    assert 2 not in routes


async def test_concurrent_connects_of_one_device_form_a_chain(kv: KV) -> None:
    # Atomic read-and-set: exactly one connect sees no predecessor, and every other
    # one sees a distinct predecessor (nobody is kicked twice, nobody is missed).
    p = kv.store
    connectors = [f"c{i}" for i in range(20)]
    previous = await asyncio.gather(*(p.connect(5, "phone", c, LONG) for c in connectors))
    assert previous.count(None) == 1
    seen = [x for x in previous if x is not None]
    assert len(set(seen)) == len(seen) == 19
    (last,) = set(connectors) - set(seen)
    assert routes_of(await p.routes([5]), 5) == {("phone", last)}


# ------------------------------------------------------------------- sessions


async def test_revoke_and_is_revoked(kv: KV) -> None:
    s = kv.store
    assert not await s.is_revoked("sess-1")
    await s.revoke("sess-1", LONG)
    await s.revoke("sess-2", SHORT)
    assert await s.is_revoked("sess-1")
    assert await s.is_revoked("sess-2")
    assert not await s.is_revoked("sess-3")
    await kv.wait(SHORT + 0.3)
    assert await s.is_revoked("sess-1")
    assert not await s.is_revoked("sess-2")  # the revocation outlives the token, no more


# ---------------------------------------------------------------- idempotency


async def test_claim_returns_the_existing_value(kv: KV) -> None:
    k = kv.store
    assert await k.claim("u1:m1", b"ack-1", LONG) is None
    assert await k.claim("u1:m1", b"ack-2", LONG) == b"ack-1"
    assert await k.claim("u2:m1", b"other", LONG) is None  # keys are independent
    assert await k.claim("u1:m1", b"ack-3", LONG) == b"ack-1"


async def test_release_frees_the_key(kv: KV) -> None:
    k = kv.store
    await k.claim("u1:m1", b"ack-1", LONG)
    await k.release("u1:m1")
    assert await k.claim("u1:m1", b"ack-2", LONG) is None
    assert await k.claim("u1:m1", b"ack-3", LONG) == b"ack-2"
    await k.release("never-claimed")


async def test_claims_in_one_call_behave_as_one_by_one(kv: KV) -> None:
    k = kv.store
    assert await k.claim("u1:m1", b"ack-1", LONG) is None
    items = [("u1:m2", b"ack-2"), ("u1:m1", b"ack-x"), ("u1:m2", b"ack-y")]
    # A key claimed before keeps its value, and so does one claimed earlier in the call.
    assert await k.claim_many(items, LONG) == [None, b"ack-1", b"ack-2"]
    assert await k.claim_many([], LONG) == []


async def test_claim_expires(kv: KV) -> None:
    k = kv.store
    await k.claim("u1:m1", b"ack-1", SHORT)
    await kv.wait(SHORT + 0.3)
    assert await k.claim("u1:m1", b"ack-2", LONG) is None


async def test_concurrent_claims_have_one_winner(kv: KV) -> None:
    k = kv.store
    results = await asyncio.gather(*(k.claim("u1:race", bytes([i]), LONG) for i in range(20)))
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1
    assert all(r == bytes(winners) for r in results if r is not None)


# ---------------------------------------------------------------- rate limits


async def test_rate_limit_counts_per_key_within_a_window(kv: KV) -> None:
    k = kv.store
    results = [await k.hit("login:alice", 3, LONG) for _ in range(5)]
    assert results[:3] == [0.0, 0.0, 0.0]
    assert all(0 < r <= LONG for r in results[3:])
    assert await k.hit("login:bob", 3, LONG) == 0.0  # another key has its own budget


async def test_rate_limit_window_resets(kv: KV) -> None:
    k = kv.store
    assert await k.hit("login:carol", 1, SHORT) == 0.0
    assert await k.hit("login:carol", 1, SHORT) > 0
    await kv.wait(SHORT + 0.3)
    assert await k.hit("login:carol", 1, SHORT) == 0.0


# Two free failures, then waits of 0.2, 0.4, 0.8, 0.8 s; forgotten 0.4 s after a wait.
BACKOFF = Backoff(allowed=2, window=0.4, base=0.2, cap=0.8)


async def test_failures_back_off_exponentially_up_to_the_cap(kv: KV) -> None:
    k = kv.store
    assert await k.blocked(["login:alice|a"]) == 0.0
    waits = [await k.fail("login:alice|a", BACKOFF) for _ in range(6)]
    assert waits == [0.0, 0.0, 0.2, 0.4, 0.8, 0.8]
    assert 0.6 < await k.blocked(["login:alice|a"]) <= 0.8
    # The longest wait of the keys asked about; keys never failed do not wait.
    await k.fail("login-addr:a", BACKOFF)
    assert 0.6 < await k.blocked(["login-addr:a", "login:alice|a", "x"]) <= 0.8
    assert await k.blocked(["login-addr:a", "x"]) == 0.0
    assert await k.blocked([]) == 0.0


async def test_a_wait_ends_and_the_count_is_forgotten_after_the_window(kv: KV) -> None:
    k = kv.store
    for _ in range(3):
        await k.fail("login:bob|a", BACKOFF)  # the third waits 0.2 s
    assert await k.blocked(["login:bob|a"]) > 0
    await kv.wait(0.25)
    assert await k.blocked(["login:bob|a"]) == 0.0
    # Still counted: the next failure waits twice as long.
    assert await k.fail("login:bob|a", BACKOFF) == 0.4
    await kv.wait(0.4 + BACKOFF.window + 0.1)
    assert await k.fail("login:bob|a", BACKOFF) == 0.0  # forgotten: a fresh allowance


async def test_forgive_clears_failures(kv: KV) -> None:
    k = kv.store
    for _ in range(4):
        await k.fail("login:carol|a", BACKOFF)
    await k.forgive("login:carol|a")
    assert await k.blocked(["login:carol|a"]) == 0.0
    assert await k.fail("login:carol|a", BACKOFF) == 0.0
    await k.forgive("never-failed")


async def test_concurrent_failures_are_each_counted(kv: KV) -> None:
    k = kv.store
    many = Backoff(allowed=5, window=LONG, base=1.0, cap=LONG)
    waits = await asyncio.gather(*(k.fail("login-addr:b", many) for _ in range(10)))
    # Ten atomic increments: five free, then 1, 2, 4, 8, 16 in some order.
    assert sorted(waits) == [0.0] * 5 + [1.0, 2.0, 4.0, 8.0, 16.0]


def test_backoff_wait_after() -> None:
    b = Backoff(allowed=3, window=60, base=1.0, cap=900)
    assert [b.wait_after(n) for n in range(1, 8)] == [0, 0, 0, 1, 2, 4, 8]
    assert b.wait_after(10_000) == 900  # no float overflow for an endless attack


# ------------------------------------------------------- Redis-only details


@pytest.mark.integration
async def test_redis_layout_and_whole_hash_expiry(redis_url: str) -> None:
    """Dead connectors' entries vanish with the hash; the layout is as documented."""
    gen = _redis(redis_url)
    item = await anext(gen)
    try:
        kv: RedisKV = item.store
        client = kv._redis
        key = f"{kv.prefix}presence:7"
        await kv.connect(7, "phone", "conn|with|bars", SHORT)
        raw = await client.hget(key, "phone")
        conn, _, expires = raw.decode().rpartition("|")
        assert conn == "conn|with|bars" and expires.isdigit()
        assert 0 < await client.pttl(key) <= int(SHORT * 1000)
        assert (await kv.routes([7]))[7][0].connector_id == "conn|with|bars"
        await kv.refresh([(7, "phone")], "conn|with|bars", 5.0)
        assert await client.pttl(key) > int(SHORT * 1000)  # the hash follows the refresh
        await kv.connect(8, "phone", "c1", SHORT)
        await asyncio.sleep(SHORT + 0.3)
        assert not await client.exists(f"{kv.prefix}presence:8")
        # A server that lost its script cache (restart) answers NOSCRIPT: the adapter
        # reloads. Simulated with unknown SHAs, not SCRIPT FLUSH, which would hit every
        # other client of this server.
        kv._refresh.sha = kv._connect.sha = "0" * 40
        await kv.refresh([(7, "phone")], "conn|with|bars", 5.0)
        assert await kv.connect(7, "phone", "c2", 5.0) == "conn|with|bars"
        assert await kv.healthy()
    finally:
        await gen.aclose()


# ------------------------------------------------- Redis down, hung, restarted

# What a caller may wait for one call when Redis is down or hung.
BOUND = 5.0


async def _unavailable_within(call: Awaitable[Any], bound: float = BOUND) -> BackendUnavailable:
    """Await ``call``, which must raise BackendUnavailable for redis within ``bound`` s."""
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        # A little slack over the bound, so a hang fails the test instead of stalling it.
        await asyncio.wait_for(call, bound + 2)
    assert time.monotonic() - started < bound
    assert info.value.backend == "redis"
    assert info.value.__cause__ is not None
    return info.value


class PrivateRedis:
    """A redis-server of this test alone, on its own port: it can be paused and killed
    without touching the shared one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self, deadline: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self._proc = await asyncio.create_subprocess_exec(
            *(binary, "--bind", "127.0.0.1", "--port", str(self.port)),
            *("--save", "", "--appendonly", "no"),
            stdout=asyncio.subprocess.DEVNULL,
        )
        end = time.monotonic() + deadline
        while not self._answers_ping():
            assert self._proc.returncode is None, "redis-server exited"
            assert time.monotonic() < end, "redis-server did not start"
            await asyncio.sleep(0.05)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def pause(self) -> None:
        """Hang it: the kernel still completes TCP handshakes, nothing answers."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    async def kill(self) -> None:
        if self._proc is None:
            return
        os.kill(self._proc.pid, signal.SIGCONT)  # let a paused one go before it dies
        self._proc.kill()
        await self._proc.wait()
        self._proc = None


async def test_redis_unreachable_every_call_raises_backend_unavailable() -> None:
    kv = RedisKV(f"redis://127.0.0.1:{free_port()}/0", prefix="imtest:down:")
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "connect": lambda: kv.connect(1, "phone", "c1", LONG),
        "disconnect": lambda: kv.disconnect(1, "phone", "c1"),
        "refresh": lambda: kv.refresh([(1, "phone")], "c1", LONG),
        "routes": lambda: kv.routes([1]),
        "revoke": lambda: kv.revoke("s1", LONG),
        "is_revoked": lambda: kv.is_revoked("s1"),
        "claim": lambda: kv.claim("u1:m1", b"ack", LONG),
        "release": lambda: kv.release("u1:m1"),
        "hit": lambda: kv.hit("login:alice", 3, LONG),
        "blocked": lambda: kv.blocked(["login:alice|a"]),
        "fail": lambda: kv.fail("login:alice|a", BACKOFF),
        "forgive": lambda: kv.forgive("login:alice|a"),
    }
    try:
        for name, call in calls.items():
            error = await _unavailable_within(call())
            assert isinstance(error.__cause__, redis.exceptions.ConnectionError), name
        assert not await kv.healthy()
    finally:
        await kv.close()


def test_redis_timeouts_default_to_two_seconds_unless_the_url_says_otherwise() -> None:
    def connection_of(kv: RedisKV) -> Any:
        return kv._redis.connection_pool.make_connection()

    default = connection_of(RedisKV("redis://127.0.0.1:6379/0"))
    assert (default.socket_timeout, default.socket_connect_timeout) == (2.0, 2.0)
    assert default.retry.get_retries() == 1
    mine = connection_of(
        RedisKV("redis://127.0.0.1:6379/0?socket_timeout=7&socket_connect_timeout=0.5")
    )
    assert (mine.socket_timeout, mine.socket_connect_timeout) == (7.0, 0.5)


@pytest.mark.integration
async def test_redis_more_callers_than_connections_wait_for_one(redis_url: str) -> None:
    # A login storm: more concurrent calls than the pool holds queue up (bounded by
    # the timeout) instead of failing at once with "Too many connections".
    gen = _redis(redis_url)
    kv = await anext(gen)
    try:
        pool = kv.store._redis.connection_pool
        assert pool.max_connections == POOL_SIZE
        results = await asyncio.gather(
            *(kv.store.is_revoked(f"s{i}") for i in range(POOL_SIZE * 3)),
            return_exceptions=True,
        )
        assert results == [False] * (POOL_SIZE * 3)
    finally:
        await gen.aclose()


@pytest.mark.integration
async def test_redis_hung_then_restarted_same_adapter_recovers() -> None:
    server = PrivateRedis(free_port())
    await server.start()
    kv = RedisKV(server.url, prefix="imtest:")
    try:
        assert await kv.claim("u1:m1", b"ack-1", LONG) is None
        assert await kv.connect(1, "phone", "c1", LONG) is None  # scripts now loaded
        before = await kv.instance()

        server.pause()
        error = await _unavailable_within(kv.claim("u1:m2", b"ack-2", LONG))
        assert isinstance(error.__cause__, redis.exceptions.TimeoutError)

        # Back, empty (and without the scripts): the same adapter carries on.
        await server.kill()
        await server.start()
        assert await kv.instance() != before  # how a connector learns to re-assert
        assert await kv.routes([1]) == {}  # the restart lost the presence
        assert await kv.claim("u1:m1", b"ack-3", LONG) is None
        assert await kv.connect(1, "phone", "c2", LONG) is None  # NOSCRIPT: reloaded
        await kv.refresh([(1, "phone")], "c2", LONG)  # its own NOSCRIPT path
        assert routes_of(await kv.routes([1]), 1) == {("phone", "c2")}

        # A restart under an idle pooled connection: the next call does not fail.
        await server.kill()
        await server.start()
        assert await kv.claim("u1:m1", b"ack-4", LONG) is None
        assert await kv.hit("login:alice", 3, LONG) == 0.0
        assert await kv.healthy()
    finally:
        await server.kill()
        await kv.close()
