"""uvicorn in the current event loop, for the gateway's API and every process's
``/metrics``: the process owns the signals and the listening socket."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the process (run_until_signal, or the
    standalone runner) owns SIGTERM/SIGINT and stops every service in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket (port 0: any free one), for uvicorn to serve on; the caller
    learns the real port from it before the server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock
