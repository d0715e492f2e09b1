"""The ZooKeeper session under the registry (``zk_registry``): whether the connection is
up, which sessions were ours, requests bounded by a deadline, and a new session when
the old one is gone.

A session can be gone without kazoo ever being told: a server that lost its data
refuses a client that has seen newer transactions than it has, so kazoo would retry
the old session forever. Like Curator, we give a session up once we have been cut off
for a whole session timeout (by then every server has expired it) and start a new one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionClosedError, ConnectionLoss, SessionExpiredError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState, ZnodeStat

log = logging.getLogger("im.registry.zk")


class ZkSession:
    """The kazoo client's connection as the registry sees it. ``on_connected`` runs on
    kazoo's connection thread after every (re)connection and must not block."""

    def __init__(
        self,
        client: KazooClient,
        session_timeout: float,
        op_timeout: float,
        on_connected: Callable[[], None],
    ) -> None:
        self.client = client
        self.session_timeout = session_timeout
        self.op_timeout = op_timeout
        self._on_connected = on_connected

        # Set while the client holds a live connection; requests wait on it.
        self.connected = threading.Event()
        # Set by close(); wakes the healing thread's pauses.
        self.closing = threading.Event()
        self.closed = False
        # The registry is started: reconnections heal and long cuts renew the session.
        self.running = False
        # Every session this client has had: a node of an earlier one is ours to take
        # back (the server may keep a session we gave up until it times out).
        self.sessions: set[int] = set()

        # The watchdog runs while we are cut off; _cut_since: when that began.
        self._watchdog_state = threading.Lock()
        self._watchdog_running = False
        self._cut_since: float | None = None
        # Stopping and starting the kazoo client (watchdog, close) one at a time.
        self._lifecycle_lock = threading.Lock()

    def session(self) -> int | None:
        client_id = self.client.client_id  # None unless connected
        return client_id[0] if client_id else None

    def deadline(self) -> float:
        return time.monotonic() + self.op_timeout

    def is_ours(self, stat: ZnodeStat) -> bool:
        """Owned by our current session."""
        session = self.session()
        return session is not None and stat.ephemeralOwner == session

    def was_ours(self, stat: ZnodeStat) -> bool:
        """Owned by an earlier session of ours (one we gave up, not yet expired)."""
        return stat.ephemeralOwner in self.sessions and not self.is_ours(stat)

    # ------------------------------------------------------------- requests

    def request(
        self, deadline: float, method: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """One ZooKeeper request (``method``: a kazoo ``*_async`` call), answered by
        ``deadline`` (time.monotonic()) or failed.

        Waits for a connection, so a short cut is ridden out; never sends while cut off
        (kazoo would queue it and send it whenever it reconnects). Retried after a lost
        connection: callers handle the outcome of a retried create or delete
        (NodeExists, NoNode)."""
        while True:
            if self.closed:
                raise ConnectionClosedError("registry is closed")
            if not self.connected.wait(max(0.0, deadline - time.monotonic())):
                raise KazooTimeoutError("no ZooKeeper connection")
            try:
                result = method(*args, **kwargs)
                return result.get(timeout=max(0.001, deadline - time.monotonic()))
            except (ConnectionLoss, SessionExpiredError):
                if self.closed or time.monotonic() >= deadline:
                    raise
                # The connection went under way; the listener clears connected in a
                # moment (don't spin meanwhile), then we wait for the next one.
                self.closing.wait(0.05)

    # ------------------------------------------------ session state (kazoo's thread)

    def on_state(self, state: str) -> None:
        # Called on kazoo's connection thread: must not block; work is spawned.
        if state == KazooState.CONNECTED:
            session = self.session()
            if session is not None:
                self.sessions.add(session)
            with self._watchdog_state:
                self._cut_since = None
            self.connected.set()
            # Every (re)connection: put back what the session lost, re-read the caches.
            self._on_connected()
        else:
            # SUSPENDED (connection lost, the session may still live) or LOST (the
            # session is gone; kazoo reconnects with a new one by itself).
            self.connected.clear()
            with self._watchdog_state:
                if self._cut_since is None:
                    self._cut_since = time.monotonic()
                if not self.running or self.closed or self._watchdog_running:
                    return
                self._watchdog_running = True
            self.client.handler.spawn(self._watch_connection)

    # ---------------------------------------------------------------- watchdog

    def _watch_connection(self) -> None:
        """Runs while we are cut off. After a whole session timeout without a
        connection our session has expired on every server, whether or not one can
        tell us: start a new one."""
        while True:
            with self._watchdog_state:
                since = self._cut_since
                if since is None or self.closed:
                    self._watchdog_running = False
                    return
            left = since + self.session_timeout - time.monotonic()
            if left > 0:
                self.connected.wait(left)
                continue
            try:
                self._renew_session()
            except Exception:
                log.exception("restarting the ZooKeeper client failed; trying again")
                with self._watchdog_state:
                    self._cut_since = time.monotonic()

    def _renew_session(self) -> None:
        with self._lifecycle_lock:
            if self.closed or self.connected.is_set():
                return
            log.warning(
                "no ZooKeeper connection for the session timeout (%.1fs): our session "
                "has expired; starting a new one",
                self.session_timeout,
            )
            # stop() gives the session up: kazoo reports LOST and forgets it, with the
            # newest transaction id it saw (which a server that lost its data refuses).
            self.client.stop()
            with self._watchdog_state:
                self._cut_since = time.monotonic()  # the new session gets a full timeout
            self.client.start_async()

    # ------------------------------------------------------------------ close

    def stop(self) -> None:
        """Stop the kazoo client for good (blocking; see ZkRegistry.close)."""
        with self._lifecycle_lock:
            # stop() closes the session: the server drops our ephemeral nodes
            # (entries and node ids) at once. Unreachable, it gives up after its
            # current connection attempt; the session then times out.
            self.client.stop()
            self.client.close()
