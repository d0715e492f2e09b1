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
lost its data (parent directories are gone too, and every watch with them).

A session can be gone without kazoo ever being told: a server that lost its data
refuses a client that has seen newer transactions than it has, so kazoo would retry
the old session forever. Like Curator, we give a session up once we have been cut off
for a whole session timeout (by then every server has expired it) and start a new one.

kazoo blocks and calls back from its own threads: blocking calls run in worker threads
(``asyncio.to_thread``), every request is bounded by a deadline (kazoo's synchronous
calls wait for a connection without limit), and shared state is guarded by locks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlparse

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState, ZnodeStat
from kazoo.retry import KazooRetry

from im.adapters.errors import unavailable_on
from im.adapters.zk_watch import (
    CONNECTION_ERRORS,
    WatchedDir,
    decode_info,
    decode_router,
    encode_info,
    encode_router,
    holding,
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
        self._connectors = self._watched_dir(self.base, decode_info, "connector")
        self._routers = self._watched_dir(f"{self.root}/routers", decode_router, "router")

        # Set while the client holds a live connection; requests wait on it.
        self._connected = threading.Event()
        # Set by close(); wakes the healing thread's pauses.
        self._closing = threading.Event()
        self._closed = False
        # The registry is started: reconnections heal and long cuts renew the session.
        self._running = False
        self._started = False
        self._start_lock = asyncio.Lock()
        # Every session this client has had: a node of an earlier one is ours to take
        # back (the server may keep a session we gave up until it times out).
        self._sessions: set[int] = set()
        # The session whose entries and leases are known to be in place: healthy()
        # holds only then.
        self._healed_session: int | None = None

        # Guards _own; held only briefly (the event loop takes it too).
        self._lock = threading.Lock()
        # What this process wants in ZooKeeper, path -> latest data, or None for an
        # entry it withdrew whose deletion is not confirmed yet. Healing makes
        # ZooKeeper match it.
        self._own: dict[str, bytes | None] = {}
        # One write of our entries at a time, so an older value (or a re-creation after
        # a session loss) never lands after a newer value or revives a withdrawn entry.
        self._write_lock = threading.Lock()
        # The node ids this process holds, each lease with the limit it was taken under;
        # and ids whose claim got no answer (the node may exist in our session though
        # no lease holds it): healing deletes those. _lease_lock makes taking and
        # re-taking ids one at a time.
        self._leases: dict[NodeLease, int] = {}
        self._unsure_ids: set[int] = set()
        self._lease_lock = threading.Lock()

        # Healing runs in one thread at a time; _heal_wanted asks it for another pass.
        self._heal_state = threading.Lock()
        self._healing = False
        self._heal_wanted = False
        # The watchdog runs while we are cut off; _cut_since: when that began.
        self._watchdog_state = threading.Lock()
        self._watchdog_running = False
        self._cut_since: float | None = None
        # Stopping and starting the kazoo client (watchdog, close) one at a time.
        self._lifecycle_lock = threading.Lock()

    def _watched_dir(self, path: str, decode: Callable[[bytes], T], what: str) -> WatchedDir[T]:
        return WatchedDir(
            self._client,
            path,
            decode,
            what,
            self._request,
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
            if self._closed:
                raise BackendUnavailable("zookeeper", "registry is closed")
            await asyncio.to_thread(self._start_sync)
            self._started = True

    def _start_sync(self) -> None:
        self._client.add_listener(self._on_state)
        self._client.start(timeout=self.connect_timeout)
        try:
            session = self._session()
            for path in (self.node_ids_path, self._connectors.path, self._routers.path):
                self._request(self._deadline(), self._client.ensure_path_async, path)
            # Both caches are filled when start() returns.
            self._connectors.sync()
            self._routers.sync()
        except BaseException:
            # Stopped, so that the next attempt starts afresh (kazoo's start() on a
            # client that is reconnecting waits for it, then fails).
            self._client.stop()
            raise
        self._healed_session = session
        self._running = True

    def healthy(self) -> bool:
        """This process holds a live session and its entries and node ids are in place
        in it (after a new session, once they are re-created)."""
        if not self._running or self._closed or self._client.state != KazooState.CONNECTED:
            return False
        session = self._session()
        return session is not None and session == self._healed_session

    def _session(self) -> int | None:
        client_id = self._client.client_id  # None unless connected
        return client_id[0] if client_id else None

    def _deadline(self) -> float:
        return time.monotonic() + self.op_timeout

    # ------------------------------------------------------------- requests

    def _request(
        self, deadline: float, method: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """One ZooKeeper request (``method``: a kazoo ``*_async`` call), answered by
        ``deadline`` (time.monotonic()) or failed.

        Waits for a connection, so a short cut is ridden out; never sends while cut off
        (kazoo would queue it and send it whenever it reconnects). Retried after a lost
        connection: callers handle the outcome of a retried create or delete
        (NodeExists, NoNode)."""
        while True:
            if self._closed:
                raise ConnectionClosedError("registry is closed")
            if not self._connected.wait(max(0.0, deadline - time.monotonic())):
                raise KazooTimeoutError("no ZooKeeper connection")
            try:
                result = method(*args, **kwargs)
                return result.get(timeout=max(0.001, deadline - time.monotonic()))
            except (ConnectionLoss, SessionExpiredError):
                if self._closed or time.monotonic() >= deadline:
                    raise
                # The connection went under way; the listener clears _connected in a
                # moment (don't spin meanwhile), then we wait for the next one.
                self._closing.wait(0.05)

    # ------------------------------------------------ session state (kazoo's thread)

    def _on_state(self, state: str) -> None:
        # Called on kazoo's connection thread: must not block; work is spawned.
        if state == KazooState.CONNECTED:
            session = self._session()
            if session is not None:
                self._sessions.add(session)
            with self._watchdog_state:
                self._cut_since = None
            self._connected.set()
            # Every (re)connection: put back what the session lost, re-read the caches.
            self._schedule_heal()
        else:
            # SUSPENDED (connection lost, the session may still live) or LOST (the
            # session is gone; kazoo reconnects with a new one by itself).
            self._connected.clear()
            with self._watchdog_state:
                if self._cut_since is None:
                    self._cut_since = time.monotonic()
                if not self._running or self._closed or self._watchdog_running:
                    return
                self._watchdog_running = True
            self._client.handler.spawn(self._watch_connection)

    # ---------------------------------------------------------------- watchdog

    def _watch_connection(self) -> None:
        """Runs while we are cut off. After a whole session timeout without a
        connection our session has expired on every server, whether or not one can
        tell us: start a new one."""
        while True:
            with self._watchdog_state:
                since = self._cut_since
                if since is None or self._closed:
                    self._watchdog_running = False
                    return
            left = since + self.session_timeout - time.monotonic()
            if left > 0:
                self._connected.wait(left)
                continue
            try:
                self._renew_session()
            except Exception:
                log.exception("restarting the ZooKeeper client failed; trying again")
                with self._watchdog_state:
                    self._cut_since = time.monotonic()

    def _renew_session(self) -> None:
        with self._lifecycle_lock:
            if self._closed or self._connected.is_set():
                return
            log.warning(
                "no ZooKeeper connection for the session timeout (%.1fs): our session "
                "has expired; starting a new one",
                self.session_timeout,
            )
            # stop() gives the session up: kazoo reports LOST and forgets it, with the
            # newest transaction id it saw (which a server that lost its data refuses).
            self._client.stop()
            with self._watchdog_state:
                self._cut_since = time.monotonic()  # the new session gets a full timeout
            self._client.start_async()

    # ----------------------------------------------------------------- healing

    def _schedule_heal(self) -> None:
        with self._heal_state:
            if not self._running or self._closed:
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
                if not self._heal_wanted or self._closed or not self._connected.is_set():
                    self._healing = False
                    return
                self._heal_wanted = False
            try:
                self._heal_once()
                continue
            except CONNECTION_ERRORS as exc:
                pause = 0.2
                if not self._closed:
                    log.warning("healing the registry failed (%s); trying again", exc)
            except Exception:
                pause = 1.0
                log.exception("healing the registry failed; trying again")
            with self._heal_state:
                self._heal_wanted = True
            self._closing.wait(pause)

    def _heal_once(self) -> None:
        session = self._session()
        # Node ids first: until ours is back, another process may take it.
        self._reclaim_leases()
        self._restore_entries()
        self._connectors.sync()
        self._routers.sync()
        if session is not None and session == self._session():
            if session != self._healed_session:
                log.info("registry entries and node ids in place in session %x", session)
            self._healed_session = session

    def _restore_entries(self) -> None:
        with self._lock:
            paths = list(self._own)
        for path in paths:
            try:
                self._push_sync(path, take_over=True, deadline=self._deadline())
            except CONNECTION_ERRORS:
                raise
            except Exception:
                log.exception("re-creating %s failed", path)

    def _is_ours(self, stat: ZnodeStat) -> bool:
        """Owned by our current session."""
        session = self._session()
        return session is not None and stat.ephemeralOwner == session

    def _was_ours(self, stat: ZnodeStat) -> bool:
        """Owned by an earlier session of ours (one we gave up, not yet expired)."""
        return stat.ephemeralOwner in self._sessions and not self._is_ours(stat)

    # ------------------------------------------------------- our own entries

    def _child_path(self, directory: WatchedDir[Any], name: str) -> str:
        if not name or "/" in name:
            raise ValueError(f"bad id {name!r}")
        return f"{directory.path}/{name}"

    def _put_sync(self, path: str, data: bytes, deadline: float) -> None:
        """Create our ephemeral node, or take over one left by an older session."""
        client = self._client
        for _ in range(5):
            try:
                self._request(
                    deadline, client.create_async, path, data, ephemeral=True, makepath=True
                )
                return
            except NodeExistsError:
                pass
            try:
                current, stat = self._request(deadline, client.get_async, path)
            except NoNodeError:
                continue  # gone meanwhile: create again
            if self._is_ours(stat):
                # Ours (a create retried after a lost reply, or healing a live session).
                if current != data:
                    self._request(deadline, client.set_async, path, data)
                return
            # A node of the same id from a previous session (our crashed predecessor,
            # or an earlier session of ours not yet reaped): replace it instead of
            # waiting up to a session timeout for the server to drop it.
            log.warning("replacing stale registry node %s (owner %x)", path, stat.ephemeralOwner)
            try:
                self._request(deadline, client.delete_async, path, version=stat.version)
            except (NoNodeError, BadVersionError):
                pass  # gone or rewritten meanwhile: look again
        raise RuntimeError(f"could not register {path}: it keeps being recreated")

    def _push_sync(self, path: str, take_over: bool, deadline: float) -> None:
        """Make ZooKeeper hold what we want at ``path``: our latest data, or nothing if
        we withdrew it.

        ``take_over``: create the node, replacing a stale one of another session; else
        set it, creating it only if it is gone (lost with a session)."""
        with holding(self._write_lock, deadline):
            with self._lock:
                if path not in self._own:
                    return
                data = self._own[path]
            if data is None:
                try:
                    self._request(deadline, self._client.delete_async, path)
                except NoNodeError:
                    pass
                with self._lock:
                    if path in self._own and self._own[path] is None:
                        del self._own[path]  # confirmed
                return
            if take_over:
                self._put_sync(path, data, deadline)
                return
            try:
                self._request(deadline, self._client.set_async, path, data)
            except NoNodeError:
                self._put_sync(path, data, deadline)

    async def _write_own(
        self, directory: WatchedDir[T], name: str, value: T, data: bytes, take_over: bool
    ) -> None:
        path = self._child_path(directory, name)
        with self._lock:
            self._own[path] = data
        await asyncio.to_thread(self._push_sync, path, take_over, self._deadline())
        # Read-your-writes for this process (unless a newer write or a withdrawal came
        # meanwhile); the watches confirm it a moment later.
        with self._lock:
            if self._own.get(path) is data:
                directory.remember(name, value)

    async def _withdraw_own(self, directory: WatchedDir[Any], name: str) -> None:
        path = self._child_path(directory, name)
        with self._lock:
            self._own[path] = None  # if the delete fails, healing deletes it later
            directory.forget(name)
        await asyncio.to_thread(self._push_sync, path, False, self._deadline())

    # ------------------------------------------------------------- connectors

    @_unavailable_on_failure
    async def register(self, info: ConnectorInfo) -> None:
        await self.start()
        info = dataclasses.replace(info)
        await self._write_own(
            self._connectors, info.connector_id, info, encode_info(info), take_over=True
        )

    @_unavailable_on_failure
    async def update(self, info: ConnectorInfo) -> None:
        """Refresh this connector's entry (its live connection count)."""
        await self.start()
        info = dataclasses.replace(info)
        await self._write_own(
            self._connectors, info.connector_id, info, encode_info(info), take_over=False
        )

    @_unavailable_on_failure
    async def deregister(self, connector_id: str) -> None:
        await self.start()
        await self._withdraw_own(self._connectors, connector_id)

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
        path = self._child_path(self._routers, router_id)
        with self._lock:
            # A first announcement replaces a predecessor's node of the same id; later
            # ones only flip the flag.
            fresh = self._own.get(path) is None
        data = encode_router(router_id, serving)
        await self._write_own(self._routers, router_id, serving, data, take_over=fresh)

    @_unavailable_on_failure
    async def withdraw_router(self, router_id: str) -> None:
        await self.start()
        await self._withdraw_own(self._routers, router_id)

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
        return await asyncio.to_thread(self._lease_sync, owner, limit, self._deadline())

    def _lease_sync(self, owner: str, limit: int, deadline: float) -> NodeLease:
        with holding(self._lease_lock, deadline):
            held = {lease.node_id for lease in self._leases}
            lease = NodeLease(self._take_free_id_sync(owner, limit, held, deadline), owner)
            self._leases[lease] = limit
            return lease

    def _take_free_id_sync(self, owner: str, limit: int, held: set[int], deadline: float) -> int:
        """Claim the lowest id in [0, limit) not in ``held`` (ids of our other leases)
        that no other session holds. Called with _lease_lock held."""
        try:
            children = self._request(deadline, self._client.get_children_async, self.node_ids_path)
        except NoNodeError:
            children = []
        taken = held | {int(child) for child in children if child.isdigit()}
        for node_id in range(limit):
            # The scan is only a hint: another process may create one of these first.
            if node_id in taken:
                continue
            # Unsure until the claim answers: if it does not, healing removes the node
            # should the create have gone through after all.
            self._unsure_ids.add(node_id)
            claimed = self._claim_id_sync(node_id, owner, deadline)
            self._unsure_ids.discard(node_id)
            if claimed:
                return node_id
        raise RuntimeError(f"all {limit} node ids are taken")

    def _claim_id_sync(self, node_id: int, owner: str, deadline: float) -> bool:
        """Create ``node-ids/<node_id>`` in our session; False if another process
        holds it. Never called for an id another lease of ours holds."""
        path = f"{self.node_ids_path}/{node_id}"
        client = self._client
        for _ in range(5):
            try:
                self._request(
                    deadline,
                    client.create_async,
                    path,
                    owner.encode(),
                    ephemeral=True,
                    makepath=True,
                )
                return True
            except NodeExistsError:
                pass
            try:
                _, stat = self._request(deadline, client.get_async, path)
            except NoNodeError:
                continue  # released meanwhile: try again
            if self._was_ours(stat):
                # Held by a session of ours that we gave up: take it back now rather
                # than move the lease once the server drops that session.
                try:
                    self._request(deadline, client.delete_async, path, version=stat.version)
                except (NoNodeError, BadVersionError):
                    pass  # gone or rewritten meanwhile: look again
                continue
            # Ours only if a create of ours was retried after its reply was lost. Unlike
            # a connector's node, another process's is never taken over: it mints ids
            # with it.
            return self._is_ours(stat)
        return False

    def _reclaim_leases(self) -> None:
        """After a (re)connection: hold each lease's id again (moving the lease to a
        free id when another process took its id meanwhile), and delete ids whose claim
        got no answer and that no lease holds."""
        with holding(self._lease_lock, self._deadline()):
            leases = list(self._leases.items())
            held = {lease.node_id for lease, _ in leases}
            lost: list[tuple[NodeLease, int]] = []
            for lease, limit in leases:
                try:
                    if not self._claim_id_sync(lease.node_id, lease.owner, self._deadline()):
                        lost.append((lease, limit))
                except CONNECTION_ERRORS:
                    raise
                except Exception:
                    log.exception("re-taking node id %d of %s failed", lease.node_id, lease.owner)
            for lease, limit in lost:
                self._move_lease_sync(lease, limit, held)
            self._drop_unsure_ids(held)

    def _drop_unsure_ids(self, held: set[int]) -> None:
        for node_id in sorted(self._unsure_ids):
            if node_id not in held:
                path = f"{self.node_ids_path}/{node_id}"
                try:
                    _, stat = self._request(self._deadline(), self._client.get_async, path)
                    if stat.ephemeralOwner in self._sessions:
                        self._request(
                            self._deadline(),
                            self._client.delete_async,
                            path,
                            version=stat.version,
                        )
                        log.info("released node id %d, claimed by a call that failed", node_id)
                except (NoNodeError, BadVersionError):
                    pass  # gone, or not the node we looked at
            self._unsure_ids.discard(node_id)

    def _move_lease_sync(self, lease: NodeLease, limit: int, held: set[int]) -> None:
        old = lease.node_id
        try:
            new = self._take_free_id_sync(lease.owner, limit, held, self._deadline())
        except CONNECTION_ERRORS:
            raise
        except Exception:
            # Nothing left to move to: this process keeps minting with an id another
            # one holds, so say it loudly; the next healing pass tries again.
            log.exception(
                "node id %d of %s was taken by another process and none is free",
                old,
                lease.owner,
            )
            return
        held.add(new)
        log.warning(
            "node id %d of %s was taken by another process during a ZooKeeper session "
            "loss; moving to %d",
            old,
            lease.owner,
            new,
        )
        try:
            lease.move_to(new)
        except Exception:
            log.exception("a listener of node id lease %s failed", lease.owner)

    # ------------------------------------------------------------------ close

    def _close_sync(self, finished: threading.Event) -> None:
        try:
            with self._lifecycle_lock:
                # stop() closes the session: the server drops our ephemeral nodes
                # (entries and node ids) at once. Unreachable, it gives up after its
                # current connection attempt; the session then times out.
                self._client.stop()
                self._client.close()
        except Exception:
            log.exception("stopping the ZooKeeper client failed")
        finally:
            finished.set()
        with self._lease_lock:
            self._leases.clear()
            self._unsure_ids.clear()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._running = False
        self._closing.set()
        with self._lock:
            self._own.clear()
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
