"""The web chat page: served at / with its files and the SDK, all local, under a CSP
that lets it run its own scripts and open WebSockets to connectors, and without taking
anything from the API."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from services.gateway.guards import API_CSP, page_csp
from services.gateway.web import SDK_DIR, WEB_DIR
from tests.services.gateway.helpers import assert_problem

if TYPE_CHECKING:
    from .conftest import Suite

REPO_SDK = WEB_DIR.parents[2] / "clients" / "js" / "src"


async def test_the_page_is_served_at_the_root_with_its_policy(suite: Suite):
    r = await suite.client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert csp == page_csp(tls=False)
    assert "script-src 'self';" in csp and "'unsafe-inline'" not in csp
    # The connector is another origin (another port, maybe another host).
    assert re.search(r"connect-src 'self' ws: wss:", csp)
    assert r.headers["x-frame-options"] == "DENY"
    for testid in ("username", "password", "login", "register", "peer", "composer", "send"):
        assert f'data-testid="{testid}"' in r.text


async def test_its_files_and_the_sdk_are_local(suite: Suite):
    page = (await suite.client.get("/")).text
    for src in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert src.startswith(("/", "data:")), f"{src}: loaded from elsewhere"
    app = await suite.client.get("/web/app.js")
    assert app.status_code == 200
    assert "javascript" in app.headers["content-type"]
    assert app.headers["content-security-policy"] == page_csp(tls=False)
    assert 'from "/sdk/im.js"' in app.text
    for name in ("im.js", "gateway.js", "wire.js"):
        sdk = await suite.client.get(f"/sdk/{name}")
        assert sdk.status_code == 200, name
        assert sdk.text == (REPO_SDK / name).read_text(), "one copy of the SDK"
    assert SDK_DIR == REPO_SDK.resolve()


async def test_the_page_shadows_no_api_route(suite: Suite):
    # Unknown paths and wrong methods are still the API's problem answers.
    assert_problem(await suite.client.get("/v1/nope"), 404, "not_found")
    assert_problem(await suite.client.get("/v1/auth/login"), 405, "method_not_allowed")
    r = await suite.client.get("/healthz")
    assert r.json() == {"status": "ok"}
    assert r.headers["content-security-policy"] == API_CSP
    # Nothing outside the page's folders, even through its link to the SDK.
    assert (await suite.client.get("/web/sdk/im.js")).status_code == 404
    assert (await suite.client.get("/sdk/../web.py")).status_code == 404
    paths = (await suite.client.get("/openapi.json")).json()["paths"]
    assert "/" not in paths


async def test_login_hands_the_page_a_websocket_url(suite: Suite):
    await suite.register("webby")
    answer = await suite.login("webby", "web-1")
    assert re.fullmatch(r"ws://[^/]+:\d+/ws", answer["connector"]["ws"])


def test_with_tls_the_page_may_open_only_wss():
    csp = page_csp(tls=True)
    assert "connect-src 'self' wss:;" in csp
    assert "ws:" not in csp.replace("wss:", "")
