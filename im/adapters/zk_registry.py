"""Registry on ZooKeeper through kazoo 2.11: live connectors, live routers, node ids.

Under ``<root>`` every entry is an ephemeral znode of the writer's session, so it goes
away with the process that wrote it (within the session timeout after a crash):

- ``connectors/<connector_id>``: JSON (id, host, ports, connection count, version);
- ``routers/<router_id>``: JSON ``{"router_id": ..., "serving": bool}``;
- ``node-ids/<n>``: the owner's name; held by the process that mints ids with ``n``.

Readers (gateway, router) never ask ZooKeeper on the request path: a ``WatchedDir`` (zk_watch)
(a children watch on the directory plus a data watch per child) keeps a local copy of
``connectors`` and of ``routers``, and ``connectors()`` / ``routers()`` read it.

Healing. The registry keeps what this process wants in ZooKeeper (its entries with
their latest values, withdrawals not yet confirmed, its node-id leases) and, after
every (re)connection, makes ZooKeeper match it and re-reads both directories with fresh
watches. That covers a session resumed after a short cut (writes that failed
meanwhile), a session that expired (its ephemeral nodes are gone), and a server that
lost its data (parent directories are gone too, and every watch with them). A session
that is gone without kazoo being told is given up after a session timeout (zk_session).

kazoo blocks and calls back from its own threads: blocking calls run in worker threads
(``asyncio.to_thread``), every request is bounded by a deadline (kazoo's synchronous
calls wait for a connection without limit), and shared state is guarded by locks.

The pieces: ``zk_session`` (connection, requests, watchdog), ``zk_entries`` (our
connector and router entries), ``zk_leases`` (node ids), ``zk_watch`` (the caches).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlparse

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from im.adapters.errors import unavailable_on
from im.adapters.zk_entries import OwnEntries
from im.adapters.zk_leases import NodeIdLeases
from im.adapters.zk_session import ZkSession
from im.adapters.zk_watch import (
    CONNECTION_ERRORS,
    WatchedDir,
    decode_info,
    decode_router,
    encode_info,
    encode_router,
)
from im.ports import BackendUnavailable, ConnectorInfo, NodeLease

if TYPE_CHECKING:
    from im.config import Settings

log = logging.getLogger("im.registry.zk")

T = TypeVar("T")

# kazoo's errors (connection loss, session expiry, a server that does not answer in
# time) and socket errors: the registry is down, try later.
_unavailable_on_failure = unavailable_on("zookeeper", (KazooException, KazooTimeoutError, OSError))


class ZkRegistry:
    """The ``Registry`` port on ZooKeeper. Starts on first use (or ``await start()``).

    ``op_timeout`` bounds each write (register, update, lease, ...): when ZooKeeper does
    not answer by then it raises BackendUnavailable. ``close_timeout`` bounds close().
    """

    def __init__(
        self,
        hosts: str,
        root: str = "/im",
        session_timeout: float = 4.0,
        connect_timeout: float = 10.0,
        op_timeout: float = 3.0,
        close_timeout: float = 2.0,
    ) -> None:
        self.hosts = hosts
        self.root = "/" + root.strip("/") if root.strip("/") else "/im"
        self.base = f"{self.root}/connectors"
        self.node_ids_path = f"{self.root}/node-ids"
        self.session_timeout = session_timeout
        self.connect_timeout = connect_timeout
        self.op_timeout = op_timeout
        self.close_timeout = close_timeout
        self._client = KazooClient(
            hosts=hosts,
            timeout=session_timeout,
            # Reconnect forever with short pauses (the default backs off to an hour).
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=1.0),
        )
        self._zk = ZkSession(self._client, session_timeout, op_timeout, self._schedule_heal)
        self._connectors = self._watched_dir(self.base, decode_info, "connector")
        self._routers = self._watched_dir(f"{self.root}/routers", decode_router, "router")
        self._entries = OwnEntries(self._zk)
        self._leases = NodeIdLeases(self._zk, self.node_ids_path)

        self._started = False
        self._start_lock = asyncio.Lock()
        # The session whose entries and leases are known to be in place: healthy()
        # holds only then.
        self._healed_session: int | None = None

        # Healing runs in one thread at a time; _heal_wanted asks it for another pass.
        self._heal_state = threading.Lock()
        self._healing = False
        self._heal_wanted = False

    def _watched_dir(self, path: str, decode: Callable[[bytes], T], what: str) -> WatchedDir[T]:
        return WatchedDir(
            self._client,
            path,
            decode,
            what,
            self._zk.request,
            self.op_timeout,
            self._schedule_heal,
        )

    # ----------------------------------------------------------------- start

    @_unavailable_on_failure
    async def start(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            if self._zk.closed:
                raise BackendUnavailable("zookeeper", "registry is closed")
            await asyncio.to_thread(self._start_sync)
            self._started = True

    def _start_sync(self) -> None:
        self._client.add_listener(self._zk.on_state)
        self._client.start(timeout=self.connect_timeout)
        try:
            session = self._zk.session()
            for path in (self.node_ids_path, self._connectors.path, self._routers.path):
                self._zk.request(self._zk.deadline(), self._client.ensure_path_async, path)
            # Both caches are filled when start() returns.
            self._connectors.sync()
            self._routers.sync()
        except BaseException:
            # Stopped, so that the next attempt starts afresh (kazoo's start() on a
            # client that is reconnecting waits for it, then fails).
            self._client.stop()
            raise
        self._healed_session = session
        self._zk.running = True

    def healthy(self) -> bool:
        """This process holds a live session and its entries and node ids are in place
        in it (after a new session, once they are re-created)."""
        if not self._zk.running or self._zk.closed or self._client.state != KazooState.CONNECTED:
            return False
        session = self._zk.session()
        return session is not None and session == self._healed_session

    # ----------------------------------------------------------------- healing

    def _schedule_heal(self) -> None:
        with self._heal_state:
            if not self._zk.running or self._zk.closed:
                return
            self._heal_wanted = True
            if self._healing:
                return
            self._healing = True
        self._client.handler.spawn(self._heal)

    def _heal(self) -> None:
        """Passes until one succeeds while connected; stops when the connection goes
        (the next one schedules healing again)."""
        while True:
            with self._heal_state:
                if not self._heal_wanted or self._zk.closed or not self._zk.connected.is_set():
                    self._healing = False
                    return
                self._heal_wanted = False
            try:
                self._heal_once()
                continue
            except CONNECTION_ERRORS as exc:
                pause = 0.2
                if not self._zk.closed:
                    log.warning("healing the registry failed (%s); trying again", exc)
            except Exception:
                pause = 1.0
                log.exception("healing the registry failed; trying again")
            with self._heal_state:
                self._heal_wanted = True
            self._zk.closing.wait(pause)

    def _heal_once(self) -> None:
        session = self._zk.session()
        # Node ids first: until ours is back, another process may take it.
        self._leases.reclaim()
        self._entries.restore()
        self._connectors.sync()
        self._routers.sync()
        if session is not None and session == self._zk.session():
            if session != self._healed_session:
                log.info("registry entries and node ids in place in session %x", session)
            self._healed_session = session

    # ------------------------------------------------------------- connectors

    @_unavailable_on_failure
    async def register(self, info: ConnectorInfo) -> None:
        await self.start()
        info = dataclasses.replace(info)
        await self._entries.write(
            self._connectors, info.connector_id, info, encode_info(info), take_over=True
        )

    @_unavailable_on_failure
    async def update(self, info: ConnectorInfo) -> None:
        """Refresh this connector's entry (its live connection count)."""
        await self.start()
        info = dataclasses.replace(info)
        await self._entries.write(
            self._connectors, info.connector_id, info, encode_info(info), take_over=False
        )

    @_unavailable_on_failure
    async def deregister(self, connector_id: str) -> None:
        await self.start()
        await self._entries.withdraw(self._connectors, connector_id)

    @_unavailable_on_failure
    async def connectors(self) -> list[ConnectorInfo]:
        """Live connectors, from the watched cache (no round trip)."""
        await self.start()
        return [dataclasses.replace(i) for i in self._connectors.snapshot().values()]

    # ---------------------------------------------------------------- routers

    @_unavailable_on_failure
    async def announce_router(self, router_id: str, serving: bool) -> None:
        """Create or update this router's entry (serving: its batches go through)."""
        await self.start()
        # A first announcement replaces a predecessor's node of the same id; later
        # ones only flip the flag.
        fresh = not self._entries.wanted(self._routers, router_id)
        data = encode_router(router_id, serving)
        await self._entries.write(self._routers, router_id, serving, data, take_over=fresh)

    @_unavailable_on_failure
    async def withdraw_router(self, router_id: str) -> None:
        await self.start()
        await self._entries.withdraw(self._routers, router_id)

    @_unavailable_on_failure
    async def routers(self) -> dict[str, bool]:
        """Live routers: router id -> serving, from the watched cache (no round trip)."""
        await self.start()
        return self._routers.snapshot()

    # --------------------------------------------------------------- node ids

    @_unavailable_on_failure
    async def lease_node_id(self, owner: str, limit: int) -> NodeLease:
        """Take the lowest node id in [0, limit) that no live process holds. Raises
        RuntimeError when all are taken. Released by close() (the session ends).

        A lease that has to move after a session loss calls its listeners from a
        kazoo thread."""
        await self.start()
        return await asyncio.to_thread(self._leases.lease, owner, limit, self._zk.deadline())

    # ------------------------------------------------------------------ close

    def _close_sync(self, finished: threading.Event) -> None:
        try:
            self._zk.stop()
        except Exception:
            log.exception("stopping the ZooKeeper client failed")
        finally:
            finished.set()
        self._leases.clear()

    async def close(self) -> None:
        if self._zk.closed:
            return
        self._zk.closed = True
        self._zk.running = False
        self._zk.closing.set()
        self._entries.clear()
        # kazoo's stop() may wait for a connection attempt to end (up to a session
        # timeout when the server is frozen): stop in a daemon thread, wait a bounded
        # time, and let the thread finish on its own if it must (it never holds up the
        # process's exit).
        finished = threading.Event()
        threading.Thread(
            target=self._close_sync, args=(finished,), name="zk-registry-close", daemon=True
        ).start()
        if not await asyncio.to_thread(finished.wait, self.close_timeout):
            log.warning(
                "ZooKeeper client still stopping after %.1fs; our session ends by timeout",
                self.close_timeout,
            )


def from_url(url: str, settings: Settings | None = None, **overrides: Any) -> ZkRegistry:
    """``zk://h1:2181,h2:2181/im[?session_timeout=4&op_timeout=3]`` -> ZkRegistry rooted
    at the path (default ``/im``). ``settings`` is accepted for symmetry with the other
    factories."""
    del settings
    parsed = urlparse(url)
    if parsed.scheme != "zk" or not parsed.netloc:
        raise ValueError(f"not a zk:// URL: {url!r}")
    options: dict[str, Any] = {}
    for name, value in parse_qsl(parsed.query):
        if name in ("session_timeout", "connect_timeout", "op_timeout", "close_timeout"):
            options[name] = float(value)
        else:
            raise ValueError(f"unknown zk URL option {name!r}")
    options.update(overrides)
    return ZkRegistry(parsed.netloc, parsed.path or "/im", **options)
