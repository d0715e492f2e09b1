"""Pieces of the ZooKeeper registry (``zk_registry``): how entries are encoded, how
requests are bounded, and ``WatchedDir``, the watched local copy of one directory."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType, WatchedEvent

from im.ports import ConnectorInfo

log = logging.getLogger("im.registry.zk")

T = TypeVar("T")

# What "ZooKeeper did not answer" looks like from a request: the connection went (or
# the client is being restarted: ConnectionClosedError is a SessionExpiredError), the
# session expired, or no answer came in time. Healing retries these; callers see
# BackendUnavailable.
CONNECTION_ERRORS = (ConnectionLoss, SessionExpiredError, OperationTimeoutError, KazooTimeoutError)


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


@contextmanager
def holding(lock: threading.Lock, deadline: float) -> Iterator[None]:
    """Hold ``lock``, waiting for it no later than ``deadline`` (time.monotonic())."""
    if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise KazooTimeoutError("registry busy: gave up waiting for a lock")
    try:
        yield
    finally:
        lock.release()


# A request: (deadline, kazoo *_async method, its arguments) -> its result.
Request = Callable[..., Any]


class WatchedDir(Generic[T]):
    """A local copy of one directory's children and their decoded data.

    A children watch on the directory and a data watch per child keep it current; an
    entry whose data does not decode is left out (logged), so one bad writer cannot
    break the readers. The copy lags ZooKeeper by one notification (milliseconds);
    ``remember`` lets the writing process see its own write at once.

    kazoo's ChildrenWatch is not used: it stops for good when its directory is deleted
    (as on a server that lost its data), and its DataWatch retries without limit on
    kazoo's callback thread. Here a missing directory is watched for its creation, and
    ``sync()``, called after every (re)connection, re-reads everything and sets every
    watch again (kazoo forgets its watches when a connection drops).
    """

    def __init__(
        self,
        client: KazooClient,
        path: str,
        decode: Callable[[bytes], T],
        what: str,
        request: Request,
        op_timeout: float,
        on_trouble: Callable[[], None],
    ) -> None:
        self._client = client
        self.path = path
        self._decode = decode
        self._what = what  # for log lines: "connector", "router"
        self._request = request
        self._op_timeout = op_timeout
        # Called when a read after a notification failed: the copy may be stale until
        # the next sync(), which the owner then schedules.
        self._on_trouble = on_trouble
        # Guards _cache and _watched; held only briefly (the event loop takes it too).
        self._lock = threading.Lock()
        self._cache: dict[str, T] = {}
        # Children whose data we watch (decodable or not).
        self._watched: set[str] = set()
        # One reading of ZooKeeper at a time (kazoo's callback thread and the healing
        # thread), so an older answer never lands after a newer one.
        self._read_lock = threading.Lock()

    def sync(self) -> None:
        """Blocking; raises when ZooKeeper does not answer. Re-read the directory and
        every child, setting all watches again."""
        with holding(self._read_lock, self._deadline()):
            self._read_children(reread_all=True)

    def snapshot(self) -> dict[str, T]:
        with self._lock:
            return dict(self._cache)

    def remember(self, name: str, value: T) -> None:
        with self._lock:
            self._cache[name] = value

    def forget(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)

    def _deadline(self) -> float:
        return time.monotonic() + self._op_timeout

    # ------------------------------------------------ reading (under _read_lock)

    def _read_children(self, reread_all: bool) -> None:
        children = self._list()  # empty if the directory is gone (data lost)
        with self._lock:
            known = set(self._watched)
            if reread_all:
                # Entries of ours remembered but never watched too (their node may be
                # gone with a session). Not on notifications: the listing may predate
                # the write being remembered now.
                known |= set(self._cache)
            for gone in known - children:
                self._watched.discard(gone)
                self._cache.pop(gone, None)
            wanted = children if reread_all else children - self._watched
        for name in sorted(wanted):
            self._read_entry(name)

    def _list(self) -> set[str]:
        """The children, with a watch on the list; with a watch for the directory's
        creation if it does not exist."""
        while True:
            try:
                return set(
                    self._request(
                        self._deadline(),
                        self._client.get_children_async,
                        self.path,
                        watch=self._on_dir_event,
                    )
                )
            except NoNodeError:
                pass
            stat = self._request(
                self._deadline(), self._client.exists_async, self.path, watch=self._on_dir_event
            )
            if stat is None:
                return set()
            # Created in between: list it.

    def _read_entry(self, name: str) -> None:
        try:
            data, _ = self._request(
                self._deadline(),
                self._client.get_async,
                f"{self.path}/{name}",
                watch=self._on_entry_event,
            )
        except NoNodeError:
            self._drop(name)  # gone meanwhile; the children watch has fired or will
            return
        with self._lock:
            self._watched.add(name)
            try:
                self._cache[name] = self._decode(data)
            except (ValueError, TypeError) as exc:
                log.warning("ignoring undecodable %s entry %s: %s", self._what, name, exc)
                self._cache.pop(name, None)

    def _drop(self, name: str) -> None:
        with self._lock:
            self._watched.discard(name)
            self._cache.pop(name, None)

    # ----------------------------------------- notifications (kazoo's callback thread)

    def _on_dir_event(self, event: WatchedEvent) -> None:
        # NONE: the connection changed state; sync() follows the reconnection.
        if event.type != EventType.NONE:
            self._handle(lambda: self._read_children(reread_all=False))

    def _on_entry_event(self, event: WatchedEvent) -> None:
        if event.type == EventType.NONE:
            return
        name = event.path.rsplit("/", 1)[-1]
        if event.type == EventType.DELETED:
            # Not watched any more; if the id comes back, the children watch says so.
            self._handle(lambda: self._drop(name))
        else:
            self._handle(lambda: self._read_entry(name))

    def _handle(self, read: Callable[[], None]) -> None:
        try:
            with holding(self._read_lock, self._deadline()):
                read()
        except ConnectionClosedError:
            pass  # the registry is closing
        except CONNECTION_ERRORS as exc:
            log.warning("reading %s entries failed (%s); re-reading them later", self._what, exc)
            self._on_trouble()
        except Exception:
            log.exception("reading %s entries failed; re-reading them later", self._what)
            self._on_trouble()
