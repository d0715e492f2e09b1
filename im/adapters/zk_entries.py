"""This process's own entries in the ZooKeeper registry (``zk_registry``): connector and
router znodes it wrote, kept in ZooKeeper across session losses and withdrawn for good."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, TypeVar

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from im.adapters.zk_session import ZkSession
from im.adapters.zk_watch import CONNECTION_ERRORS, WatchedDir, holding

log = logging.getLogger("im.registry.zk")

T = TypeVar("T")


class OwnEntries:
    """What this process wants in ZooKeeper; ``restore()`` (healing) makes ZooKeeper
    match it."""

    def __init__(self, zk: ZkSession) -> None:
        self._zk = zk
        # Guards _own; held only briefly (the event loop takes it too).
        self._lock = threading.Lock()
        # What this process wants in ZooKeeper, path -> latest data, or None for an
        # entry it withdrew whose deletion is not confirmed yet. Healing makes
        # ZooKeeper match it.
        self._own: dict[str, bytes | None] = {}
        # One write of our entries at a time, so an older value (or a re-creation after
        # a session loss) never lands after a newer value or revives a withdrawn entry.
        self._write_lock = threading.Lock()

    def wanted(self, directory: WatchedDir[Any], name: str) -> bool:
        """We have written this entry and not withdrawn it."""
        path = self._child_path(directory, name)
        with self._lock:
            return self._own.get(path) is not None

    def restore(self) -> None:
        """Blocking: after a (re)connection, re-create or delete each entry as wanted."""
        with self._lock:
            paths = list(self._own)
        for path in paths:
            try:
                self._push_sync(path, take_over=True, deadline=self._zk.deadline())
            except CONNECTION_ERRORS:
                raise
            except Exception:
                log.exception("re-creating %s failed", path)

    def clear(self) -> None:
        with self._lock:
            self._own.clear()

    def _child_path(self, directory: WatchedDir[Any], name: str) -> str:
        if not name or "/" in name:
            raise ValueError(f"bad id {name!r}")
        return f"{directory.path}/{name}"

    def _put_sync(self, path: str, data: bytes, deadline: float) -> None:
        """Create our ephemeral node, or take over one left by an older session."""
        client = self._zk.client
        for _ in range(5):
            try:
                self._zk.request(
                    deadline, client.create_async, path, data, ephemeral=True, makepath=True
                )
                return
            except NodeExistsError:
                pass
            try:
                current, stat = self._zk.request(deadline, client.get_async, path)
            except NoNodeError:
                continue  # gone meanwhile: create again
            if self._zk.is_ours(stat):
                # Ours (a create retried after a lost reply, or healing a live session).
                if current != data:
                    self._zk.request(deadline, client.set_async, path, data)
                return
            # A node of the same id from a previous session (our crashed predecessor,
            # or an earlier session of ours not yet reaped): replace it instead of
            # waiting up to a session timeout for the server to drop it.
            log.warning("replacing stale registry node %s (owner %x)", path, stat.ephemeralOwner)
            try:
                self._zk.request(deadline, client.delete_async, path, version=stat.version)
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
                    self._zk.request(deadline, self._zk.client.delete_async, path)
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
                self._zk.request(deadline, self._zk.client.set_async, path, data)
            except NoNodeError:
                self._put_sync(path, data, deadline)

    async def write(
        self, directory: WatchedDir[T], name: str, value: T, data: bytes, take_over: bool
    ) -> None:
        path = self._child_path(directory, name)
        with self._lock:
            self._own[path] = data
        await asyncio.to_thread(self._push_sync, path, take_over, self._zk.deadline())
        # Read-your-writes for this process (unless a newer write or a withdrawal came
        # meanwhile); the watches confirm it a moment later.
        with self._lock:
            if self._own.get(path) is data:
                directory.remember(name, value)

    async def withdraw(self, directory: WatchedDir[Any], name: str) -> None:
        path = self._child_path(directory, name)
        with self._lock:
            self._own[path] = None  # if the delete fails, healing deletes it later
            directory.forget(name)
        await asyncio.to_thread(self._push_sync, path, False, self._zk.deadline())
