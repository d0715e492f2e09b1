"""Request ids and traces at the gateway: every answer names its request, the id is in
the log lines of the services the request reached, and a traced request's gRPC calls
are children of its span."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from im import logs
from tests.services.gateway.conftest import Suite


@pytest.fixture
def user_service_lines() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("im.user")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_every_answer_names_its_request(suite: Suite) -> None:
    first = await suite.client.get("/healthz")
    second = await suite.client.get("/v1/users/me")  # a 401 problem
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in ids)
    assert ids[0] != ids[1]


async def test_a_clients_request_id_is_kept_unless_it_is_odd(suite: Suite) -> None:
    kept = await suite.client.get("/healthz", headers={"X-Request-ID": "lb-7f3a:42"})
    assert kept.headers["x-request-id"] == "lb-7f3a:42"
    for odd in ("two words", "x" * 129, 'quote"d', ""):
        answer = await suite.client.get("/healthz", headers={"X-Request-ID": odd})
        assert re.fullmatch("[0-9a-f]{32}", answer.headers["x-request-id"]), odd


async def test_the_request_id_reaches_the_user_services_log_lines(
    suite: Suite, user_service_lines: io.StringIO
) -> None:
    r = await suite.client.post(
        "/v1/auth/register",
        json={"username": "traced", "password": "secret-pass-1"},
        headers={"X-Request-ID": "client-req-1"},
    )
    assert r.status_code == 201, r.text
    lines = [json.loads(line) for line in user_service_lines.getvalue().splitlines()]
    registered = [line for line in lines if line["message"].startswith("registered user")]
    assert registered and registered[0]["request_id"] == "client-req-1"
    assert registered[0]["service"] == "user"


async def test_a_traced_requests_grpc_calls_are_its_children(
    suite: Suite,
    recorded_spans,  # type: ignore[no-untyped-def]
) -> None:
    await suite.register("carol")
    recorded_spans.clear()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # a client's trace
    r = await suite.client.post(
        "/v1/auth/login",
        json={"username": "carol", "password": "secret-pass-1", "device_id": "phone"},
        headers={"traceparent": parent},
    )
    assert r.status_code == 200, r.text
    await suite.client.get("/readyz")  # probes are not traced

    spans = {s.name: s for s in recorded_spans.get_finished_spans()}
    http = spans["POST /v1/auth/login"]
    assert http.attributes["http.route"] == "/v1/auth/login"
    assert http.attributes["http.response.status_code"] == 200
    assert http.attributes["im.request_id"] == r.headers["x-request-id"]
    assert format(http.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert http.parent is not None and format(http.parent.span_id, "016x") == "b7ad6b7169203331"
    authenticate = spans["im.v1.UserService/Authenticate"]
    assert authenticate.parent is not None
    assert authenticate.parent.span_id == http.context.span_id
    assert not any(name.startswith("GET /readyz") for name in spans)
