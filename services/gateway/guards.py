"""Pure ASGI middlewares that guard every HTTP answer of the gateway: a request body
limit enforced before the body is read, and the security headers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A JSON API answer is never a document to render, frame or load resources for.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The interactive docs (Swagger UI, ReDoc) load their bundle and styles from the
# gateway itself (docs_ui), start with an inline script and call the API itself.
DOCS_CSP = (
    "default-src 'none'; "
    "script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; "
    "img-src 'self' data:; "
    "worker-src blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HSTS = "max-age=31536000"  # one year; only sent over TLS (RFC 6797 ignores it on http)


def page_csp(tls: bool) -> str:
    """The web chat page's policy: its own scripts and styles only (no inline code, no
    CDN). It opens WebSockets to connectors whose addresses come from the login answer
    and change as connectors come and go, so any WebSocket host is allowed (only
    ``wss:`` when the suite serves TLS: a page over https cannot use ``ws:`` anyway)."""
    sockets = "wss:" if tls else "ws: wss:"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {sockets}; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with ``refuse()`` (a 413 problem).

    A declared ``Content-Length`` over the limit is refused before a single body byte
    is read, so before authentication, routing or parsing spend anything on it. A
    streamed (chunked) body is counted as the app reads it and cut off at the limit:
    the app then sees a disconnect, and whatever it answers goes nowhere.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        refuse: Callable[[], Response],
        larger: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.refuse = refuse
        self.larger = larger or {}  # exact paths with a limit of their own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.max_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._answer(scope, receive, send)
            return
        await self._counted(scope, receive, send, limit)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self.refuse()
        # The unread rest of the body makes the connection unusable: close it.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await self._answer(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the client has its 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The app failed on the disconnect it was shown; the 413 was the answer.


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            with contextlib.suppress(ValueError):
                return int(value)
            return None  # malformed: the server rejects it; count the stream meanwhile
    return None


class SecurityHeadersMiddleware:
    """Adds the standard security headers to every answer, and ``Cache-Control:
    no-store`` to every answer under ``no_store_prefixes`` (tokens and user data must
    not be kept by browsers or shared caches)."""

    def __init__(
        self,
        app: ASGIApp,
        docs_paths: Iterable[str],
        no_store_prefixes: Iterable[str],
        hsts: bool,
    ) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)
        self.no_store_prefixes = tuple(no_store_prefixes)
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._add(MutableHeaders(scope=message), path)
            await send(message)

        await self.app(scope, receive, with_headers)

    def _add(self, headers: MutableHeaders, path: str) -> None:
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault(
            "Content-Security-Policy", DOCS_CSP if path in self.docs_paths else API_CSP
        )
        if self.hsts:
            headers.setdefault("Strict-Transport-Security", HSTS)
        if path.startswith(self.no_store_prefixes):
            headers["Cache-Control"] = "no-store"
            headers["Pragma"] = "no-cache"
