"""Every request of the gateway gets a request id and, when traces are recorded, a
server span.

The id is the client's ``X-Request-ID`` when it is a sane token, else a new one. It is
in the log context of everything the request does, travels to the user and group
services in gRPC metadata (``im.grpcctx``), and comes back in the answer's
``X-Request-ID``, so a client's report can be found in every service's log.
"""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from im import logs, tracing

HEADER = b"x-request-id"
# What a client may choose: an id from a proxy or a client library, never a log
# injection (no spaces, quotes or control characters) and bounded.
_SANE = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")
# Probes and scrapes come every few seconds: their spans would bury the requests.
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


def request_id_of(scope: Scope) -> tuple[str, str]:
    """(request id, traceparent) of a request; a new id when it brought none usable."""
    request_id = parent = b""
    for key, value in scope.get("headers", ()):
        if key == HEADER:
            request_id = value
        elif key == b"traceparent":
            parent = value
    chosen = request_id.decode() if _SANE.fullmatch(request_id) else uuid.uuid4().hex
    return chosen, parent.decode("latin-1")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, parent = request_id_of(scope)
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (HEADER, raw_id)]
            await send(message)

        token = logs.bind(request_id=request_id)
        try:
            if not tracing.enabled or scope.get("path") in UNTRACED:
                await self.app(scope, receive, send_with_id)
                return
            await self._traced(scope, receive, send_with_id, parent, request_id)
        finally:
            logs.reset(token)

    async def _traced(
        self, scope: Scope, receive: Receive, send: Send, parent: str, request_id: str
    ) -> None:
        method = scope.get("method", "")
        span = tracing.start(
            f"{method} {scope.get('path', '')}",
            parent,
            tracing.SpanKind.SERVER,
            {
                "http.request.method": method,
                "url.path": scope.get("path", ""),
                "im.request_id": request_id,
            },
        )

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                span.set_attribute("http.response.status_code", message["status"])
                if message["status"] >= 500:
                    tracing.fail(span, f"HTTP {message['status']}")
            await send(message)

        with tracing.activate(span):
            try:
                await self.app(scope, receive, send_traced)
            finally:
                # Named by the route template once routing found it (bounded names).
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
