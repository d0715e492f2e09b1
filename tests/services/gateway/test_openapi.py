"""The API's own description: /docs and /redoc work offline (local assets), every
error is documented as the problem+json it is, 422 only where input can be invalid,
429 where rate limits apply."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from services.gateway.guards import DOCS_CSP

if TYPE_CHECKING:
    from tests.services.gateway.conftest import Suite

PROBLEM = "application/problem+json"
RATE_LIMITED = {
    ("post", "/v1/conversations/{conversation_id}/messages"),
    ("post", "/v1/auth/register"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/users/me/password"),
    ("post", "/v1/attachments"),
    ("get", "/v1/search"),
    ("get", "/v1/conversations/{conversation_id}/presence"),
}


async def spec_of(suite: Suite) -> dict[str, Any]:
    r = await suite.client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


async def test_the_docs_load_everything_from_the_gateway(suite: Suite) -> None:
    for page, assets in [
        ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]),
        ("/redoc", ["redoc.standalone.js"]),
    ]:
        html = (await suite.client.get(page)).text
        loaded = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert loaded and all(url.startswith("/docs-assets/") for url in loaded), loaded
        for asset in assets:
            assert f"/docs-assets/{asset}" in loaded
            r = await suite.client.get(f"/docs-assets/{asset}")
            assert r.status_code == 200 and len(r.content) > 10_000, asset
    assert "https:" not in DOCS_CSP and "script-src 'self' 'unsafe-inline';" in DOCS_CSP
    bundle = (await suite.client.get("/docs-assets/swagger-ui-bundle.js")).text
    assert re.search(r'"5\.\d+\.\d+"', bundle)  # Swagger UI 5: renders OpenAPI 3.1


async def test_every_error_is_a_problem_in_the_spec(suite: Suite) -> None:
    spec = await spec_of(suite)
    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])
    assert "HTTPValidationError" not in str(spec) and "ValidationError" not in str(spec)
    errors = 0
    for method, path, op in operations(spec):
        for status, response in op["responses"].items():
            if int(status) < 400 or path == "/readyz":  # not ready: its status, as JSON
                continue
            errors += 1
            assert set(response["content"]) == {PROBLEM}, (method, path, status)
            schema = response["content"][PROBLEM]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, status)
    assert errors > 50


def takes_input(op: dict[str, Any]) -> bool:
    """A body, or a parameter that is more than any string: something to validate."""
    if "requestBody" in op:
        return True
    for parameter in op.get("parameters", []):
        schema = {k: v for k, v in parameter["schema"].items() if k not in ("title",)}
        if schema != {"type": "string"}:
            return True
    return False


async def test_422_is_documented_where_input_can_be_invalid_and_only_there(
    suite: Suite,
) -> None:
    for method, path, op in operations(await spec_of(suite)):
        if path in ("/healthz", "/readyz", "/metrics"):
            continue
        assert ("422" in op["responses"]) == takes_input(op), (method, path)


async def test_429_is_documented_where_rate_limits_apply(suite: Suite) -> None:
    limited = set()
    for method, path, op in operations(await spec_of(suite)):
        if "429" in op["responses"]:
            limited.add((method, path))
            assert "Retry-After" in op["responses"]["429"]["headers"]
    # Every admin route: wrong admin tokens back off per address.
    admin = {(m, p) for m, p, _ in operations(await spec_of(suite)) if p.startswith("/v1/admin/")}
    assert admin and admin <= limited
    assert limited - admin == RATE_LIMITED


async def test_an_overlong_group_id_is_a_documented_422(suite: Suite) -> None:
    _, headers = await suite.user("alice")
    too_long = "g:" + "1" * 70
    for method, path in [
        ("GET", f"/v1/groups/{too_long}"),
        ("POST", f"/v1/groups/{too_long}/leave"),
    ]:
        r = await suite.client.request(method, path, headers=headers)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (path, r.text)
