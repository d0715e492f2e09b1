"""Presence, revoked sessions and idempotency keys on Redis (redis.asyncio).

Same semantics as ``im.adapters.memory.MemoryKV``. Keys, under a configurable prefix
(default ``im:``):

- ``{prefix}presence:{user_id}``: one hash per user, field = device id, value =
  ``"{connector_id}|{expires_at_ms}"``. Redis 7.0 has no per-field TTL, so every entry
  carries its own expiry (Redis server time, so connector clocks do not matter) and an
  expired entry counts as absent; the whole hash gets an EXPIRE of the longest entry
  TTL, so the entries of a dead connector vanish with it.
- ``{prefix}revoked:{session_id}``: a flag with the revocation's TTL.
- ``{prefix}idem:{key}``: the claimed value, ``SET NX GET PX`` (needs Redis >= 7.0).
- ``{prefix}rate:{key}``: a fixed-window counter (INCR, PEXPIRE NX on the first hit).
- ``{prefix}fail:{key}``: failures of a backoff key, a hash ``n`` (count) and
  ``until`` (end of its wait, Redis server time in ms), expiring ``window`` after the
  wait; counted by one Lua script.

Every hot-path call (connect, disconnect, routes, is_revoked, claim) is one round
trip: a Lua script (EVALSHA) or one pipeline. Scripts touch one key each, so the
layout also fits Redis Cluster.

Every call is bounded (socket timeouts of ``DEFAULT_TIMEOUT`` and one quick retry on a
broken connection, unless the URL says otherwise) and raises ``BackendUnavailable``
when Redis is unreachable, hung or loading; the connection pool reconnects by itself
once the server is back.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from im.adapters.errors import unavailable_on
from im.ports import Backoff, DeviceRoute

# Seconds for a connect and for each reply, unless the URL sets socket_timeout /
# socket_connect_timeout. redis-py's own default is 5 s each.
DEFAULT_TIMEOUT = 2.0
POOL_SIZE = 100  # connections per process; more callers wait for one (DEFAULT_TIMEOUT)

# What "Redis as a whole did not answer" looks like through redis-py: its
# ConnectionError (which includes BusyLoadingError while a restarted server loads its
# data, and AuthenticationError), its TimeoutError, and socket errors it lets through.
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def _retry_policy() -> Retry:
    """One retry, after 50 ms, and only on a broken connection.

    redis-py's Redis() default retries 10 times with exponential backoff (10 ms base,
    1 s cap) on ConnectionError and TimeoutError: about a minute against a hung server;
    Redis.from_url without ``retry`` does not retry at all. One retry is what it takes
    to replace a pooled connection that a server restart closed, so the first call
    after a restart succeeds. A timeout is not retried: a slow server may still apply
    the first attempt (SET NX GET, INCR and the connect script are not idempotent),
    and a second wait would double the worst case. Worst case per call: one
    DEFAULT_TIMEOUT against a hung server, about two when a connection breaks late.
    """
    return Retry(ConstantBackoff(0.05), retries=1, supported_errors=(RedisConnectionError,))


_unavailable_on_failure = unavailable_on("redis", _UNAVAILABLE)


# Field value layout "connector|expires_ms"; the greedy match splits at the last '|',
# so a connector id may itself contain '|'.
_LUA_HELPERS = """
local function parse(v)
  if not v then return nil, 0 end
  local conn, exp = string.match(v, '^(.*)|(%d+)$')
  if not conn then return nil, 0 end
  return conn, tonumber(exp)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function extend(key, ttl_ms)
  -- the hash lives as long as its longest-lived entry
  if redis.call('PTTL', key) < ttl_ms then redis.call('PEXPIRE', key, ttl_ms) end
end
"""

# KEYS[1] hash; ARGV device, connector, ttl_ms -> previous live connector or false.
_CONNECT = (
    _LUA_HELPERS
    + """
local now = now_ms()
local ttl = tonumber(ARGV[3])
local prev_conn, prev_exp = parse(redis.call('HGET', KEYS[1], ARGV[1]))
-- drop other expired devices while we are here: keeps the hash small
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local _, exp = parse(all[i + 1])
  if exp <= now and all[i] ~= ARGV[1] then redis.call('HDEL', KEYS[1], all[i]) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. (now + ttl))
extend(KEYS[1], ttl)
if prev_conn and prev_exp > now then return prev_conn end
return false
"""
)

# KEYS[1] hash; ARGV device, connector -> 1 if deleted (compare-and-delete).
_DISCONNECT = (
    _LUA_HELPERS
    + """
local conn = parse(redis.call('HGET', KEYS[1], ARGV[1]))
if conn == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""
)

# KEYS[1] hash; ARGV connector, ttl_ms, device... -> number of entries written.
_REFRESH = (
    _LUA_HELPERS
    + """
local now = now_ms()
local ttl = tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV do
  local conn, exp = parse(redis.call('HGET', KEYS[1], ARGV[i]))
  -- ours, missing (a restarted Redis lost it) or expired: (re)write it; a live entry
  -- of another connector means the device moved there: leave it
  if conn == ARGV[1] or not conn or exp <= now then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1] .. '|' .. (now + ttl))
    n = n + 1
  end
end
if n > 0 then extend(KEYS[1], ttl) end
return n
"""
)


# KEYS[1] hash; ARGV allowed, base_ms, cap_ms, window_ms -> the wait now imposed (ms).
# Numbers go back to Redis through %d: a bare Lua number may be written as 1.7e+12.
_FAIL = (
    _LUA_HELPERS
    + """
local now = now_ms()
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local over = n - tonumber(ARGV[1])
local wait = 0
if over > 0 then
  wait = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * 2 ^ math.min(over - 1, 64))
  wait = math.floor(wait)
end
redis.call('HSET', KEYS[1], 'until', string.format('%d', now + wait))
redis.call('PEXPIRE', KEYS[1], string.format('%d', wait + tonumber(ARGV[4])))
return wait
"""
)


def _ms(ttl: float) -> int:
    # PX 0 is an error and a TTL below 1 ms is meaningless: round up to 1 ms.
    return max(1, int(ttl * 1000))


def _parse(value: bytes) -> tuple[str, int] | None:
    conn, sep, exp = value.decode().rpartition("|")
    if not sep or not exp.isdigit():
        return None
    return conn, int(exp)


def _client(url: str) -> Redis:
    # from_url lets the URL's query parameters win over these keyword defaults. A
    # blocking pool: a burst of calls (thousands of clients logging in at once) waits
    # up to DEFAULT_TIMEOUT for a free connection, where redis-py's default pool
    # refuses at once past its size ("Too many connections").
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=DEFAULT_TIMEOUT,
        socket_timeout=DEFAULT_TIMEOUT,
        socket_connect_timeout=DEFAULT_TIMEOUT,
        retry=_retry_policy(),
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the pool


class RedisKV:
    """Presence + SessionStore + IdempotencyStore on one Redis connection pool."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "im:",
        *,
        client: Redis | None = None,
    ) -> None:
        # decode_responses stays off: idempotency values are bytes.
        self._redis: Redis = client if client is not None else _client(url)
        self._prefix = prefix
        self._connect = self._redis.register_script(_CONNECT)
        self._disconnect = self._redis.register_script(_DISCONNECT)
        self._refresh = self._redis.register_script(_REFRESH)
        self._fail = self._redis.register_script(_FAIL)

    @property
    def prefix(self) -> str:
        return self._prefix

    def _presence_key(self, user_id: int) -> str:
        return f"{self._prefix}presence:{user_id}"

    # --------------------------------------------------------------- presence
    @_unavailable_on_failure
    async def connect(
        self, user_id: int, device_id: str, connector_id: str, ttl: float
    ) -> str | None:
        previous = await self._connect(
            keys=[self._presence_key(user_id)], args=[device_id, connector_id, _ms(ttl)]
        )
        return previous.decode() if previous else None

    @_unavailable_on_failure
    async def disconnect(self, user_id: int, device_id: str, connector_id: str) -> None:
        await self._disconnect(keys=[self._presence_key(user_id)], args=[device_id, connector_id])

    @_unavailable_on_failure
    async def refresh(self, entries: list[tuple[int, str]], connector_id: str, ttl: float) -> None:
        if not entries:
            return
        by_user: dict[int, list[str]] = {}
        for user_id, device_id in entries:
            by_user.setdefault(user_id, []).append(device_id)
        # One EVALSHA per user in one pipeline. Not via Script-in-pipeline: redis-py
        # then sends SCRIPT EXISTS first on every execute (an extra round trip).
        sha = self._refresh.sha

        async def run() -> list:
            pipe = self._redis.pipeline(transaction=False)
            for user_id, devices in by_user.items():
                pipe.evalsha(sha, 1, self._presence_key(user_id), connector_id, _ms(ttl), *devices)
            return await pipe.execute(raise_on_error=False)

        results = await run()
        if any(isinstance(r, NoScriptError) for r in results):
            # Server restarted or SCRIPT FLUSH: load once and replay (refresh is idempotent).
            sha = self._refresh.sha = await self._redis.script_load(_REFRESH)
            results = await run()
        for r in results:
            if isinstance(r, Exception):
                raise r

    @_unavailable_on_failure
    async def routes(self, user_ids: list[int]) -> dict[int, list[DeviceRoute]]:
        if not user_ids:
            return {}
        users = list(dict.fromkeys(user_ids))
        # TIME rides in the same pipeline: expiry is judged by the server's clock, as
        # the scripts that wrote the entries did.
        pipe = self._redis.pipeline(transaction=False)
        pipe.time()
        for user_id in users:
            pipe.hgetall(self._presence_key(user_id))
        (secs, usecs), *hashes = await pipe.execute()
        now_ms = int(secs) * 1000 + int(usecs) // 1000
        out: dict[int, list[DeviceRoute]] = {}
        for user_id, fields in zip(users, hashes, strict=True):
            live = []
            for device, value in fields.items():
                parsed = _parse(value)
                if parsed is not None and parsed[1] > now_ms:
                    live.append(DeviceRoute(device.decode(), parsed[0]))
            if live:
                out[user_id] = live
        return out

    # --------------------------------------------------------------- sessions
    @_unavailable_on_failure
    async def revoke(self, session_id: str, ttl: float) -> None:
        await self._redis.set(f"{self._prefix}revoked:{session_id}", b"1", px=_ms(ttl))

    @_unavailable_on_failure
    async def is_revoked(self, session_id: str) -> bool:
        return bool(await self._redis.exists(f"{self._prefix}revoked:{session_id}"))

    # ------------------------------------------------------------ idempotency
    @_unavailable_on_failure
    async def claim(self, key: str, value: bytes, ttl: float) -> bytes | None:
        # SET NX GET (Redis >= 7.0): sets only if absent and returns the old value,
        # atomically, in one command.
        return await self._redis.set(
            f"{self._prefix}idem:{key}", value, nx=True, px=_ms(ttl), get=True
        )

    @_unavailable_on_failure
    async def claim_many(self, items: list[tuple[str, bytes]], ttl: float) -> list[bytes | None]:
        # One pipeline (not a transaction): a connector's batch of Sends, one round trip.
        if not items:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for key, value in items:
            pipe.set(f"{self._prefix}idem:{key}", value, nx=True, px=_ms(ttl), get=True)
        return list(await pipe.execute())

    @_unavailable_on_failure
    async def release(self, key: str) -> None:
        await self._redis.delete(f"{self._prefix}idem:{key}")

    # -- rate limits: a fixed-window counter, one round trip
    @_unavailable_on_failure
    async def hit(self, key: str, limit: int, window: float) -> float:
        name = f"{self._prefix}rate:{key}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.pexpire(name, _ms(window), nx=True)  # the first hit opens the window
            pipe.pttl(name)
            count, _, ttl_ms = await pipe.execute()
        if count <= limit:
            return 0.0
        return max(ttl_ms, 1) / 1000.0

    # -- failure backoff: a hash per key, counted by a script, read in one pipeline
    def _fail_key(self, key: str) -> str:
        return f"{self._prefix}fail:{key}"

    @_unavailable_on_failure
    async def blocked(self, keys: list[str]) -> float:
        if not keys:
            return 0.0
        pipe = self._redis.pipeline(transaction=False)
        pipe.time()  # waits are in server time, as the script wrote them
        for key in keys:
            pipe.hget(self._fail_key(key), "until")
        (secs, usecs), *ends = await pipe.execute()
        now_ms = int(secs) * 1000 + int(usecs) // 1000
        longest = max([0, *(int(end) - now_ms for end in ends if end is not None)])
        return longest / 1000.0

    @_unavailable_on_failure
    async def fail(self, key: str, backoff: Backoff) -> float:
        args = [backoff.allowed, _ms(backoff.base), _ms(backoff.cap), _ms(backoff.window)]
        wait_ms = await self._fail(keys=[self._fail_key(key)], args=args)
        return int(wait_ms) / 1000.0

    @_unavailable_on_failure
    async def forgive(self, key: str) -> None:
        await self._redis.delete(self._fail_key(key))

    @_unavailable_on_failure
    async def instance(self) -> str:
        # run_id is new at every server start: a restarted (empty) Redis, or a
        # failover to a replica, shows up here even between two failed calls.
        info = await self._redis.info("server")
        return str(info["run_id"])

    # -------------------------------------------------------------- lifecycle
    async def healthy(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self._redis.aclose()
