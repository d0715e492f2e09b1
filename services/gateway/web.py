"""The web chat page the gateway serves: ``/`` (index.html), its files under ``/web/``
and the JavaScript SDK it is built on under ``/sdk/`` (clients/js/src, reached through
the ``web/sdk`` link, so there is one copy of the SDK). Everything is local: the page
works without the internet."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from services.gateway.guards import page_csp

WEB_DIR = Path(__file__).with_name("web")
# Resolved: StaticFiles refuses a path that leaves its directory through a link.
SDK_DIR = (WEB_DIR / "sdk").resolve()


class _PageFiles(StaticFiles):
    """Static files with the page's CSP, revalidated on each load (an upgraded gateway
    must not run a cached older SDK against its new API)."""

    def __init__(self, directory: Path, csp: str) -> None:
        super().__init__(directory=directory)
        self.csp = csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message):  # type: ignore[no-untyped-def]
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", self.csp.encode()))
                headers.append((b"cache-control", b"no-cache"))
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, with_headers)


def add_web_page(app: FastAPI, tls: bool) -> None:
    """Serve the page at ``/`` beside the API (no route of the API is shadowed: the
    page's files live under their own prefixes)."""
    csp = page_csp(tls)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        headers = {"Content-Security-Policy": csp, "Cache-Control": "no-cache"}
        return FileResponse(WEB_DIR / "index.html", headers=headers)

    app.mount("/web", _PageFiles(WEB_DIR, csp), name="web")
    app.mount("/sdk", _PageFiles(SDK_DIR, csp), name="sdk")
