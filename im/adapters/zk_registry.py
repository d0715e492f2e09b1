"""Registry on ZooKeeper through kazoo 2.11: live connectors, live routers, node ids.

Under ``<root>`` every entry is an ephemeral znode of the writer's session, so it goes
away with the process that wrote it (within the session timeout after a crash):

- ``connectors/<connector_id>``: JSON (id, host, ports, connection count, version);
- ``routers/<router_id>``: JSON ``{"router_id": ..., "serving": bool}``;
- ``node-ids/<n>``: the owner's name; held by the process that mints ids with ``n``.

Readers (gateway, router) never ask ZooKeeper on the request path: a ``WatchedDir``
(a ChildrenWatch on the directory plus a DataWatch per child) keeps a local copy of
``connectors`` and of ``routers``, and ``connectors()`` / ``routers()`` read it.

After a session loss the server has dropped our ephemeral nodes; kazoo reconnects with
a new session and we re-create what this process wrote (its connectors, routers and
node-id leases), with the latest values.

kazoo blocks and calls back from its own threads: blocking calls run in worker threads
(``asyncio.to_thread``), and shared state is guarded by locks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlparse

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState, ZnodeStat
from kazoo.retry import KazooRetry

from im.adapters.errors import unavailable_on
from im.ports import BackendUnavailable, ConnectorInfo, NodeLease

if TYPE_CHECKING:
    from im.config import Settings

log = logging.getLogger("im.registry.zk")

T = TypeVar("T")


def _json_object(data: bytes) -> dict[str, Any]:
    raw = json.loads(data)
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    return raw


def encode_info(info: ConnectorInfo) -> bytes:
    return json.dumps(dataclasses.asdict(info), separators=(",", ":")).encode()


def decode_info(data: bytes) -> ConnectorInfo:
    raw = _json_object(data)
    fields = {f.name for f in dataclasses.fields(ConnectorInfo)}
    # Ignore unknown keys: a newer connector version may publish more.
    return ConnectorInfo(**{k: v for k, v in raw.items() if k in fields})


def encode_router(router_id: str, serving: bool) -> bytes:
    return json.dumps({"router_id": router_id, "serving": serving}, separators=(",", ":")).encode()


def decode_router(data: bytes) -> bool:
    """A router entry's ``serving`` flag."""
    serving = _json_object(data).get("serving")
    if not isinstance(serving, bool):
        raise ValueError(f"serving is not a boolean: {serving!r}")
    return serving


class WatchedDir(Generic[T]):
    """A local copy of one directory's children and their decoded data.

    A ChildrenWatch on the directory starts a DataWatch per child; an entry whose data
    does not decode is left out (logged), so one bad writer cannot break the readers.
    The copy lags ZooKeeper by one notification (milliseconds); ``remember`` lets the
    writing process see its own write at once.
    """

    def __init__(
        self, client: KazooClient, path: str, decode: Callable[[bytes], T], what: str
    ) -> None:
        self._client = client
        self.path = path
        self._decode = decode
        self._what = what  # for log lines: "connector", "router"
        self._lock = threading.Lock()
        self._cache: dict[str, T] = {}
        # Per watched child, the token of its live DataWatch; a watch whose token is no
        # longer current stops itself and leaves the cache alone.
        self._watches: dict[str, object] = {}

    def start(self) -> None:
        """Blocking. Fills the copy before returning: ChildrenWatch calls back once at
        once, and so does each DataWatch it starts."""
        self._client.ensure_path(self.path)
        self._client.ChildrenWatch(self.path, self._on_children)

    def snapshot(self) -> dict[str, T]:
        with self._lock:
            return dict(self._cache)

    def remember(self, name: str, value: T) -> None:
        with self._lock:
            self._cache[name] = value

    def forget(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)

    def _on_children(self, children: list[str]) -> None:
        current = set(children)
        new: list[tuple[str, object]] = []
        with self._lock:
            for child in list(self._watches):
                if child not in current:
                    del self._watches[child]
                    self._cache.pop(child, None)
            for child in current:
                if child not in self._watches:
                    token = object()
                    self._watches[child] = token
                    new.append((child, token))
        for child, token in new:
            self._client.DataWatch(f"{self.path}/{child}", self._data_callback(child, token))

    def _data_callback(self, child: str, token: object) -> Any:
        def on_data(data: bytes | None, stat: ZnodeStat | None) -> bool | None:
            with self._lock:
                if self._watches.get(child) is not token:
                    return False  # the child went away; a new watch owns it if it returns
                if data is None or stat is None:
                    # Deleted: keep watching, the same id may come back (restart).
                    self._cache.pop(child, None)
                    return None
                try:
                    self._cache[child] = self._decode(data)
                except (ValueError, TypeError) as exc:
                    log.warning("ignoring undecodable %s entry %s: %s", self._what, child, exc)
                    self._cache.pop(child, None)
            return None

        return on_data


# kazoo's errors (connection loss, session expiry, a server that does not answer in
# time) and socket errors: the registry is down, try later.
_unavailable_on_failure = unavailable_on("zookeeper", (KazooException, KazooTimeoutError, OSError))


class ZkRegistry:
    """The ``Registry`` port on ZooKeeper. Starts on first use (or ``await start()``)."""

    def __init__(
        self,
        hosts: str,
        root: str = "/im",
        session_timeout: float = 4.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.hosts = hosts
        self.root = "/" + root.strip("/") if root.strip("/") else "/im"
        self.base = f"{self.root}/connectors"
        self.node_ids_path = f"{self.root}/node-ids"
        self.session_timeout = session_timeout
        self.connect_timeout = connect_timeout
        self._client = KazooClient(
            hosts=hosts,
            timeout=session_timeout,
            # Reconnect forever with short pauses (the default backs off to an hour).
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=2.0),
            command_retry=KazooRetry(max_tries=5, delay=0.1, backoff=2, max_delay=1.0),
        )
        self._connectors = WatchedDir(self._client, self.base, decode_info, "connector")
        self._routers = WatchedDir(self._client, f"{self.root}/routers", decode_router, "router")
        # Guards _own; held only briefly (the event loop takes it too).
        self._lock = threading.Lock()
        # The entries this process wrote, path -> latest data: re-created after a
        # session loss.
        self._own: dict[str, bytes] = {}
        # One write of our entries at a time, so an older value (or a re-creation after
        # a session loss) never lands after a newer value or revives a withdrawn entry.
        self._write_lock = threading.Lock()
        # The node ids this process holds, each lease with the limit it was taken under.
        # _lease_lock makes taking and re-taking ids one at a time.
        self._leases: dict[NodeLease, int] = {}
        self._lease_lock = threading.Lock()
        self._session_lost = False
        self._started = False
        self._start_lock = asyncio.Lock()
        self._closed = False

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
        self._client.ensure_path(self.node_ids_path)
        # Both caches are filled when start() returns.
        self._connectors.start()
        self._routers.start()

    def _on_state(self, state: str) -> None:
        # kazoo's thread; must not block. LOST: the server dropped our session and
        # with it our ephemeral nodes; kazoo reconnects with a new session by itself.
        if state == KazooState.LOST:
            self._session_lost = True
        elif state == KazooState.CONNECTED and self._session_lost:
            self._session_lost = False
            self._client.handler.spawn(self._reregister)

    def _reregister(self) -> None:
        # Node ids first: until ours is back, another process may take it.
        self._reclaim_leases()
        with self._lock:
            paths = list(self._own)
        for path in paths:
            try:
                self._push_sync(path, take_over=True)
                log.info("re-created %s after a ZooKeeper session loss", path)
            except Exception:
                log.exception("re-creating %s failed", path)

    def _is_ours(self, stat: ZnodeStat) -> bool:
        client_id = self._client.client_id
        return client_id is not None and stat.ephemeralOwner == client_id[0]

    # ------------------------------------------------------- our own entries

    def _child_path(self, directory: WatchedDir[Any], name: str) -> str:
        if not name or "/" in name:
            raise ValueError(f"bad id {name!r}")
        return f"{directory.path}/{name}"

    def _put_sync(self, path: str, data: bytes) -> None:
        """Create our ephemeral node, or take over one left by an older session."""
        retry = self._client.retry
        for _ in range(5):
            try:
                retry(self._client.create, path, data, ephemeral=True, makepath=True)
                return
            except NodeExistsError:
                pass
            try:
                _, stat = retry(self._client.get, path)
            except NoNodeError:
                continue  # gone meanwhile: create again
            if self._is_ours(stat):
                # Ours (e.g. a create retried after a lost reply): just refresh it.
                retry(self._client.set, path, data)
                return
            # A node of the same id from a previous session (our crashed predecessor,
            # or our own expired session not yet reaped): replace it instead of waiting
            # up to a session timeout for the server to drop it.
            log.warning("replacing stale registry node %s (owner %x)", path, stat.ephemeralOwner)
            try:
                retry(self._client.delete, path, version=stat.version)
            except NoNodeError:
                pass
        raise RuntimeError(f"could not register {path}: it keeps being recreated")

    def _push_sync(self, path: str, take_over: bool) -> None:
        """Write our latest data for ``path`` (nothing if it was withdrawn meanwhile).

        ``take_over``: create the node, replacing a stale one of another session; else
        set it, creating it only if it is gone (lost with a session)."""
        with self._write_lock:
            with self._lock:
                data = self._own.get(path)
            if data is None:
                return
            if take_over:
                self._put_sync(path, data)
                return
            try:
                self._client.retry(self._client.set, path, data)
            except NoNodeError:
                self._put_sync(path, data)

    def _remove_sync(self, path: str) -> None:
        with self._write_lock:
            with self._lock:
                if path in self._own:
                    return  # written again meanwhile
            try:
                self._client.retry(self._client.delete, path)
            except NoNodeError:
                pass

    async def _write_own(
        self, directory: WatchedDir[T], name: str, value: T, data: bytes, take_over: bool
    ) -> None:
        path = self._child_path(directory, name)
        with self._lock:
            self._own[path] = data
        await asyncio.to_thread(self._push_sync, path, take_over)
        # Read-your-writes for this process (unless a newer write or a withdrawal came
        # meanwhile); the watches confirm it a moment later.
        with self._lock:
            if self._own.get(path) is data:
                directory.remember(name, value)

    async def _withdraw_own(self, directory: WatchedDir[Any], name: str) -> None:
        path = self._child_path(directory, name)
        with self._lock:
            self._own.pop(path, None)
            directory.forget(name)
        await asyncio.to_thread(self._remove_sync, path)

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
            fresh = path not in self._own
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
        return await asyncio.to_thread(self._lease_sync, owner, limit)

    def _lease_sync(self, owner: str, limit: int) -> NodeLease:
        with self._lease_lock:
            held = {lease.node_id for lease in self._leases}
            lease = NodeLease(self._take_free_id_sync(owner, limit, held), owner)
            self._leases[lease] = limit
            return lease

    def _take_free_id_sync(self, owner: str, limit: int, held: set[int]) -> int:
        """Claim the lowest id in [0, limit) not in ``held`` (ids of our other leases)
        that no other session holds."""
        try:
            children = self._client.retry(self._client.get_children, self.node_ids_path)
        except NoNodeError:
            children = []
        taken = held | {int(child) for child in children if child.isdigit()}
        for node_id in range(limit):
            # The scan is only a hint: another process may create one of these first.
            if node_id not in taken and self._claim_id_sync(node_id, owner):
                return node_id
        raise RuntimeError(f"all {limit} node ids are taken")

    def _claim_id_sync(self, node_id: int, owner: str) -> bool:
        """Create ``node-ids/<node_id>`` in our session; False if another session
        holds it. Never called for an id another lease of ours holds."""
        path = f"{self.node_ids_path}/{node_id}"
        retry = self._client.retry
        for _ in range(5):
            try:
                retry(self._client.create, path, owner.encode(), ephemeral=True, makepath=True)
                return True
            except NodeExistsError:
                pass
            try:
                _, stat = retry(self._client.get, path)
            except NoNodeError:
                continue  # released meanwhile: try again
            # Ours only if a create of ours was retried after its reply was lost. Unlike
            # a connector's node, another session's is never taken over: that process
            # mints ids with it.
            return self._is_ours(stat)
        return False

    def _reclaim_leases(self) -> None:
        """After a session loss: take each lease's id again, or move the lease to a
        free id when another process took its id meanwhile."""
        with self._lease_lock:
            leases = list(self._leases.items())
            lost: list[tuple[NodeLease, int]] = []
            for lease, limit in leases:
                try:
                    if self._claim_id_sync(lease.node_id, lease.owner):
                        log.info("node id %d of %s re-taken", lease.node_id, lease.owner)
                    else:
                        lost.append((lease, limit))
                except Exception:
                    log.exception("re-taking node id %d of %s failed", lease.node_id, lease.owner)
            held = {lease.node_id for lease, _ in leases}
            for lease, limit in lost:
                self._move_lease_sync(lease, limit, held)

    def _move_lease_sync(self, lease: NodeLease, limit: int, held: set[int]) -> None:
        old = lease.node_id
        try:
            new = self._take_free_id_sync(lease.owner, limit, held)
        except Exception:
            # Nothing left to move to: this process keeps minting with an id another
            # one holds, so say it loudly; the next session loss tries again.
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

    def _close_sync(self) -> None:
        # stop() closes the session: the server drops our ephemeral nodes (entries and
        # node ids) at once.
        self._client.stop()
        self._client.close()
        # Here, not on the event loop: a re-take after a session loss may hold the lock
        # for some round trips.
        with self._lease_lock:
            self._leases.clear()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._own.clear()
        if self._started:
            await asyncio.to_thread(self._close_sync)


def from_url(url: str, settings: Settings | None = None, **overrides: Any) -> ZkRegistry:
    """``zk://h1:2181,h2:2181/im[?session_timeout=4]`` -> ZkRegistry rooted at the path
    (default ``/im``). ``settings`` is accepted for symmetry with the other factories."""
    del settings
    parsed = urlparse(url)
    if parsed.scheme != "zk" or not parsed.netloc:
        raise ValueError(f"not a zk:// URL: {url!r}")
    options: dict[str, Any] = {}
    for name, value in parse_qsl(parsed.query):
        if name in ("session_timeout", "connect_timeout"):
            options[name] = float(value)
        else:
            raise ValueError(f"unknown zk URL option {name!r}")
    options.update(overrides)
    return ZkRegistry(parsed.netloc, parsed.path or "/im", **options)
