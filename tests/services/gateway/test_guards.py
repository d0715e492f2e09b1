"""The gateway's guards: the request body limit (before the body is read, so before
authentication) and the security headers on every answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from im.auth import TokenIssuer, TokenVerifier, load_keys
from services.gateway.api import create_app
from services.gateway.guards import API_CSP, DOCS_CSP, HSTS
from services.gateway.service import Gateway
from tests.services.gateway.helpers import assert_problem

if TYPE_CHECKING:
    from .conftest import Suite

LIMIT = 65536  # the default of IM_MAX_REQUEST_BODY_BYTES
HUGE = 200 * 1024 * 1024
CHUNK = 16 * 1024


@dataclass
class Exchange:
    """One request run through the ASGI app, with what the app pulled from the client."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    bytes_read: int = 0
    receive_calls: int = 0


async def run_asgi(
    app: object,
    method: str,
    path: str,
    headers: dict[str, str],
    chunks: Iterator[bytes],
) -> Exchange:
    """Calls the app as the server would, counting every body byte it reads."""
    out = Exchange()

    async def receive() -> dict:
        out.receive_calls += 1
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        out.bytes_read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            out.status = message["status"]
            out.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            out.body += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    await app(scope, receive, send)  # type: ignore[operator]
    return out


def endless(size: int = CHUNK) -> Iterator[bytes]:
    while True:
        yield b"x" * size


def app_of(suite: Suite) -> object:
    """The gateway's own app (middlewares, routes, auth) over the suite's services."""
    return create_app(suite.gateway.gateway)


# -------------------------------------------------------------------- body limit
@pytest.mark.parametrize("path", ["/v1/auth/login", "/v1/conversations/direct", "/v1/groups"])
async def test_declared_huge_body_is_refused_before_one_byte_is_read(
    suite: Suite, path: str
) -> None:
    # Unauthenticated: the 413 comes before authentication could answer 401.
    out = await run_asgi(
        app_of(suite),
        "POST",
        path,
        {"Content-Type": "application/json", "Content-Length": str(HUGE)},
        endless(1024 * 1024),
    )
    assert out.status == 413
    assert out.bytes_read == 0 and out.receive_calls == 0
    assert out.headers["content-type"].startswith("application/problem+json")
    assert out.headers["connection"] == "close"
    body = json.loads(out.body)
    assert body["code"] == "payload_too_large" and body["status"] == 413


async def test_streamed_body_is_cut_off_at_the_limit(suite: Suite) -> None:
    out = await run_asgi(
        app_of(suite),
        "POST",
        "/v1/auth/login",
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        endless(),
    )
    assert out.status == 413
    assert json.loads(out.body)["code"] == "payload_too_large"
    # Read up to the chunk that crossed the limit, and not one more.
    assert LIMIT < out.bytes_read <= LIMIT + CHUNK


async def test_body_at_the_limit_is_processed(suite: Suite) -> None:
    login = json.dumps({"username": "nobody", "password": "wrong-pass-1", "device_id": "p"})
    padded = login.encode().ljust(LIMIT, b" ")  # JSON allows trailing whitespace
    out = await run_asgi(
        app_of(suite),
        "POST",
        "/v1/auth/login",
        {"Content-Type": "application/json", "Content-Length": str(len(padded))},
        iter([padded]),
    )
    assert out.status == 401, out.body
    assert json.loads(out.body)["code"] == "invalid_credentials"


@pytest.mark.parametrize("settings_overrides", [{"max_request_body_bytes": 100}])
async def test_limit_follows_the_setting(suite: Suite) -> None:
    r = await suite.client.post("/v1/auth/register", content=b"{" + b" " * 200 + b"}")
    assert_problem(r, 413, "payload_too_large")
    r = await suite.client.post("/v1/auth/register", json={"username": "al"})
    assert_problem(r, 422, "invalid_request")


async def _raw_request(suite: Suite, head: bytes, body: bytes = b"") -> bytes:
    """Sends ``head`` (and ``body``) on a fresh socket and returns the answer's head."""
    url = urlsplit(suite.gateway.endpoints()["http"])
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(head + body)
        await writer.drain()
        # Bounded: a server that waited for the rest of the body would never answer.
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()


async def test_server_answers_413_without_waiting_for_the_declared_body(suite: Suite) -> None:
    head = (
        b"POST /v1/auth/login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(HUGE).encode() + b"\r\n\r\n"
    )
    answer = await _raw_request(suite, head)  # not one body byte is sent
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in answer.lower()


async def test_server_cuts_a_chunked_body_off_at_the_limit(suite: Suite) -> None:
    head = (
        b"POST /v1/conversations/direct HTTP/1.1\r\nHost: gw\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
    body = chunk * (LIMIT // CHUNK + 1)  # just over the limit, and never terminated
    answer = await _raw_request(suite, head, body)
    assert answer.startswith(b"HTTP/1.1 413 ")


# ----------------------------------------------------------------------- headers
def assert_security_headers(headers: object, csp: str = API_CSP) -> None:
    get = headers.get  # type: ignore[attr-defined]
    assert get("x-content-type-options") == "nosniff"
    assert get("x-frame-options") == "DENY"
    assert get("referrer-policy") == "no-referrer"
    assert get("content-security-policy") == csp
    assert get("strict-transport-security") is None  # plain HTTP: no HSTS


def assert_no_store(headers: object) -> None:
    assert headers.get("cache-control") == "no-store"  # type: ignore[attr-defined]
    assert headers.get("pragma") == "no-cache"  # type: ignore[attr-defined]


async def test_auth_answers_are_not_stored(suite: Suite) -> None:
    r = await suite.client.post(
        "/v1/auth/register", json={"username": "alice", "password": "secret-pass-1"}
    )
    assert r.status_code == 201
    assert_no_store(r.headers)
    assert_security_headers(r.headers)
    r = await suite.client.post(
        "/v1/auth/login",
        json={"username": "alice", "password": "secret-pass-1", "device_id": "phone"},
    )
    assert r.status_code == 200 and "access_token" in r.json()
    assert_no_store(r.headers)
    assert_security_headers(r.headers)
    failed = await suite.client.post(
        "/v1/auth/login",
        json={"username": "alice", "password": "wrong-pass-99", "device_id": "phone"},
    )
    assert failed.status_code == 401
    assert_no_store(failed.headers)


async def test_api_answers_carry_security_headers_and_are_not_stored(suite: Suite) -> None:
    _, headers = await suite.user("alice")
    for r in [
        await suite.client.get("/v1/users/me", headers=headers),
        await suite.client.get("/v1/conversations", headers=headers),
        await suite.client.get("/v1/users/me"),  # 401
        await suite.client.get(f"/v1/users/{2**63}", headers=headers),  # 422
    ]:
        assert_security_headers(r.headers)
        assert_no_store(r.headers)
    for r in [await suite.client.get("/healthz"), await suite.client.get("/nope")]:
        assert_security_headers(r.headers)
    too_big = await suite.client.post("/v1/auth/login", content=b"x" * (LIMIT + 1))
    assert_problem(too_big, 413, "payload_too_large")
    assert_security_headers(too_big.headers)


async def test_docs_still_load_under_their_own_policy(suite: Suite) -> None:
    docs = await suite.client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert_security_headers(docs.headers, DOCS_CSP)
    # Everything the page loads comes from the gateway itself, as the policy allows.
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "https://" not in DOCS_CSP and "http://" not in DOCS_CSP
    redoc = await suite.client.get("/redoc")
    assert_security_headers(redoc.headers, DOCS_CSP)
    spec = await suite.client.get("/openapi.json")
    assert spec.status_code == 200
    assert_security_headers(spec.headers)


async def test_hsts_is_sent_when_the_gateway_serves_tls(suite: Suite) -> None:
    # Only the answer's headers are checked: the certificate files are not opened.
    settings = suite.settings.model_copy(
        update={"tls_cert_file": "gateway.crt", "tls_key_file": "gateway.key"}
    )
    private, public = load_keys(suite.settings, need_private=True)
    assert private is not None
    gateway = Gateway(
        settings,
        suite.backends,
        suite.store,
        TokenIssuer(private, settings.jwt_issuer, settings.jwt_ttl_seconds),
        TokenVerifier(public, settings.jwt_issuer),
    )
    out = await run_asgi(create_app(gateway), "GET", "/healthz", {}, iter([]))
    assert out.status == 200
    assert out.headers["strict-transport-security"] == HSTS
    assert out.headers["x-content-type-options"] == "nosniff"
