"""Free TCP ports for local clusters, suites, benchmarks and tests.

A port asked of the kernel with ``bind(port 0)`` comes from the ephemeral range, the
same range every outgoing connection of every process takes its local port from. Between
choosing such a port and a child process binding it, a Kafka or Redis client elsewhere on
the machine can take it (measured: a connector's gRPC port taken by a Kafka client's
connection). So the ports handed out here come from below the ephemeral range, where only
listeners live, and no port is handed out twice by one process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 20000  # above the well-known and registered ports most local servers use
_handed_out: set[int] = set()
_lock = threading.Lock()


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int, host: str) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, outside the ephemeral range where possible, and
    never one this process handed out before."""
    top = _ephemeral_start() - 1
    with _lock:
        if top > _LOWEST:
            for _ in range(200):
                port = random.randint(_LOWEST, top)
                if port not in _handed_out and _bindable(port, host):
                    _handed_out.add(port)
                    return port
        while True:  # no room below the ephemeral range: ask the kernel
            with socket.socket() as probe:
                probe.bind((host, 0))
                port = probe.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def lost_a_port_race(failure: str) -> bool:
    """Whether a suite's start failed because a chosen port was taken before a child
    bound it (another process's listener can still get there first): worth a second try
    on new ports."""
    return any(sign in failure for sign in ("Failed to bind", "already in use", "cannot listen on"))
