"""Registry of live connectors on ZooKeeper through kazoo 2.11.

Each connector holds an ephemeral znode ``<root>/connectors/<connector_id>`` whose
data is JSON (id, host, ports, connection count, version): it goes away with the
connector's session, so a crashed connector disappears within the session timeout.

Readers (gateway, router) never ask ZooKeeper on the request path: a ChildrenWatch on
``<root>/connectors`` plus a DataWatch per child keep a local cache current, and
``connectors()`` reads that cache.

kazoo blocks and calls back from its own threads: blocking calls run in worker threads
(``asyncio.to_thread``), and the cache is a dict guarded by a lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlparse

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError
from kazoo.protocol.states import KazooState, ZnodeStat
from kazoo.retry import KazooRetry

from im.ports import ConnectorInfo

if TYPE_CHECKING:
    from im.config import Settings

log = logging.getLogger("im.registry.zk")


def encode_info(info: ConnectorInfo) -> bytes:
    return json.dumps(dataclasses.asdict(info), separators=(",", ":")).encode()


def decode_info(data: bytes) -> ConnectorInfo:
    raw = json.loads(data)
    fields = {f.name for f in dataclasses.fields(ConnectorInfo)}
    # Ignore unknown keys: a newer connector version may publish more.
    return ConnectorInfo(**{k: v for k, v in raw.items() if k in fields})


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
        self.session_timeout = session_timeout
        self.connect_timeout = connect_timeout
        self._client = KazooClient(
            hosts=hosts,
            timeout=session_timeout,
            # Reconnect forever with short pauses (the default backs off to an hour).
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=2.0),
            command_retry=KazooRetry(max_tries=5, delay=0.1, backoff=2, max_delay=1.0),
        )
        self._lock = threading.Lock()
        self._cache: dict[str, ConnectorInfo] = {}
        # Per watched child, the token of its live DataWatch; a watch whose token is no
        # longer current stops itself and leaves the cache alone.
        self._watches: dict[str, object] = {}
        # What this process registered: recreated after a session loss.
        self._own: dict[str, ConnectorInfo] = {}
        self._session_lost = False
        self._started = False
        self._start_lock = asyncio.Lock()
        self._closed = False

    # ----------------------------------------------------------------- start

    async def start(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            if self._closed:
                raise ConnectionError("registry is closed")
            await asyncio.to_thread(self._start_sync)
            self._started = True

    def _start_sync(self) -> None:
        self._client.add_listener(self._on_state)
        self._client.start(timeout=self.connect_timeout)
        self._client.ensure_path(self.base)
        # Calls _on_children once before returning (and each DataWatch its callback),
        # so the cache is filled when start() returns.
        self._client.ChildrenWatch(self.base, self._on_children)

    def _on_state(self, state: str) -> None:
        # kazoo's thread; must not block. LOST: the server dropped our session and
        # with it our ephemeral nodes; kazoo reconnects with a new session by itself.
        if state == KazooState.LOST:
            self._session_lost = True
        elif state == KazooState.CONNECTED and self._session_lost:
            self._session_lost = False
            self._client.handler.spawn(self._reregister)

    def _reregister(self) -> None:
        with self._lock:
            own = list(self._own.values())
        for info in own:
            try:
                self._put_sync(info)
                log.info("re-registered %s after a ZooKeeper session loss", info.connector_id)
            except Exception:
                log.exception("re-registering %s failed", info.connector_id)

    # ---------------------------------------------------------------- watches

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
            self._client.DataWatch(f"{self.base}/{child}", self._data_callback(child, token))

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
                    self._cache[child] = decode_info(data)
                except (ValueError, TypeError) as exc:
                    log.warning("ignoring undecodable registry entry %s: %s", child, exc)
                    self._cache.pop(child, None)
            return None

        return on_data

    # ------------------------------------------------------------ registration

    def _path(self, connector_id: str) -> str:
        if not connector_id or "/" in connector_id:
            raise ValueError(f"bad connector id {connector_id!r}")
        return f"{self.base}/{connector_id}"

    def _put_sync(self, info: ConnectorInfo) -> None:
        """Create our ephemeral node, or take over one left by an older session."""
        path = self._path(info.connector_id)
        data = encode_info(info)
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
            client_id = self._client.client_id
            if client_id is not None and stat.ephemeralOwner == client_id[0]:
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

    async def register(self, info: ConnectorInfo) -> None:
        await self.start()
        info = dataclasses.replace(info)
        with self._lock:
            self._own[info.connector_id] = info
        await asyncio.to_thread(self._put_sync, info)
        self._remember(info)

    def _update_sync(self, info: ConnectorInfo) -> None:
        try:
            self._client.retry(self._client.set, self._path(info.connector_id), encode_info(info))
        except NoNodeError:
            self._put_sync(info)  # lost with a session: put it back

    async def update(self, info: ConnectorInfo) -> None:
        await self.start()
        info = dataclasses.replace(info)
        with self._lock:
            self._own[info.connector_id] = info
        await asyncio.to_thread(self._update_sync, info)
        self._remember(info)

    def _remember(self, info: ConnectorInfo) -> None:
        # Read-your-writes for this process; the watches confirm it a moment later.
        with self._lock:
            if info.connector_id in self._own:
                self._cache[info.connector_id] = dataclasses.replace(info)

    def _delete_sync(self, connector_id: str) -> None:
        try:
            self._client.retry(self._client.delete, self._path(connector_id))
        except NoNodeError:
            pass

    async def deregister(self, connector_id: str) -> None:
        await self.start()
        with self._lock:
            self._own.pop(connector_id, None)
            self._cache.pop(connector_id, None)
        await asyncio.to_thread(self._delete_sync, connector_id)

    # ------------------------------------------------------------------ reads

    async def connectors(self) -> list[ConnectorInfo]:
        """Live connectors, from the watched cache (no round trip)."""
        await self.start()
        with self._lock:
            return [dataclasses.replace(i) for i in self._cache.values()]

    # ------------------------------------------------------------------ close

    def _close_sync(self) -> None:
        # stop() closes the session: the server drops our ephemeral nodes at once.
        self._client.stop()
        self._client.close()

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
