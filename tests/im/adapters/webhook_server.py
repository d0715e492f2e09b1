"""A real HTTP server in a thread that records webhook requests and answers them as
scripted: for the push adapter's tests and the end-to-end push tests."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    def notifications(self) -> list[dict[str, Any]]:
        return json.loads(self.body)["notifications"]


@dataclass
class WebhookServer:
    url: str
    received: list[Received] = field(default_factory=list)
    # Statuses to answer, in order; once used up, 200.
    script: list[int] = field(default_factory=list)
    hang: threading.Event = field(default_factory=threading.Event)  # set: answer nothing
    hanging: threading.Event = field(default_factory=threading.Event)  # a request is held
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def notifications(self) -> list[dict[str, Any]]:
        return [n for r in self.received for n in r.notifications()]

    def wait_for(self, predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
        with self.arrived:
            return self.arrived.wait_for(lambda: predicate(self), timeout)


@contextlib.contextmanager
def webhook_server() -> Iterator[WebhookServer]:
    state: WebhookServer | None = None
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            assert state is not None
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if state.hang.is_set():
                state.hanging.set()
                release.wait(30)  # a receiver that never answers
                return
            with state.arrived:
                state.received.append(Received(dict(self.headers.items()), body))
                status = state.script.pop(0) if state.script else 200
                state.arrived.notify_all()
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = WebhookServer(f"http://127.0.0.1:{server.server_address[1]}/push")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        release.set()
        server.shutdown()
        server.server_close()
