"""Problem details (RFC 9457) for every error the gateway answers: the ``Problem``
model, ``problem()`` that renders one, and the handlers that turn ``ApiError``s and
the framework's own errors into them. See docs/rest-api.md."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gateway.errors import ApiError

PROBLEM_BASE = "https://im.example/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

_TITLES = {
    "invalid_request": "Invalid request",
    "username_taken": "Username taken",
    "invalid_credentials": "Invalid credentials",
    "unauthorized": "Unauthorized",
    "forbidden": "Forbidden",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
    "no_connector": "No connector available",
    "unavailable": "Service unavailable",
    "internal": "Internal error",
    "unknown_users": "Unknown users",
    "group_full": "Group full",
    "owner_cannot_leave": "Owner cannot leave",
    "owner_role_fixed": "Owner role fixed",
    "payload_too_large": "Payload too large",
}

# Status codes of errors the framework raises itself (unknown route, bad method...).
_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    422: "invalid_request",
    503: "unavailable",
}


class Problem(BaseModel):
    """RFC 9457 problem details; `code` is stable, the texts are not."""

    type: str = Field(description="URI identifying the problem type.")
    title: str = Field(description="Short human-readable summary of the problem type.")
    status: int = Field(description="HTTP status code.")
    detail: str = Field(description="Human-readable explanation of this occurrence.")
    code: str = Field(
        description="Stable machine-readable code: invalid_request, username_taken, "
        "invalid_credentials, unauthorized, forbidden, not_found, no_connector, "
        "unavailable, rate_limited, unknown_users, group_full, owner_cannot_leave, "
        "owner_role_fixed, payload_too_large, internal."
    )
    user_ids: list[int] | None = Field(
        None, description="`unknown_users` only: every requested user id that does not exist."
    )


def problem(
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = dict(extra or {})  # extension members never replace ours
    body.update(
        {
            "type": PROBLEM_BASE + code,
            "title": _TITLES.get(code, code.replace("_", " ").capitalize()),
            "status": status,
            "detail": detail,
            "code": code,
        }
    )
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return problem(exc.status, exc.code, exc.detail, exc.headers, exc.extra)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(
        exc.status_code, "internal" if exc.status_code >= 500 else "invalid_request"
    )
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(code, code)
    return problem(exc.status_code, code, detail, dict(exc.headers or {}) or None)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Only where and what: the rejected input may be a password.
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        if err.get("type") == "json_invalid":
            loc = "body"  # the location is a character offset: not helpful
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return problem(422, "invalid_request", "; ".join(parts) or "invalid request")


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_DESCRIPTIONS = {
    400: "Bad request",
    401: "Not logged in: no, an invalid, expired or revoked token (or wrong credentials)",
    403: "Not allowed (e.g. not a member)",
    404: "Not found",
    408: "The request body stalled (nothing arrived for too long)",
    409: "Conflict with the current state",
    410: "No longer usable (e.g. an expired or used-up invite link)",
    413: "Request body too large",
    415: "The body's Content-Type is not accepted here",
    422: "Invalid input: the problem's detail says which field and why",
    429: "Too many attempts: wait Retry-After seconds",
    503: "A service behind the gateway is unavailable; try again",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route may answer: each an
    ``application/problem+json`` body of the ``Problem`` schema (``problem_openapi``
    puts it into the components)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": _DESCRIPTIONS.get(status, "Problem"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}},
        }
        if status == 429:
            response["headers"] = RETRY_AFTER
        responses[status] = response
    return responses


def problem_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document with the ``Problem`` schema in its components, and
    without FastAPI's own 422 (a ``HTTPValidationError`` body the API never sends:
    validation errors are problems, and a route that can answer 422 says so)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    app.openapi_schema = schema = FastAPI.openapi(app)
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            default = responses.get("422", {}).get("content", {}).get("application/json", {})
            if "HTTPValidationError" in str(default.get("schema", {})):
                del responses["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return schema


def add_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
