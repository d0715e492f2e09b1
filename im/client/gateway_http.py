"""HTTP details shared by the gateway client's call groups: page limits, paths,
non-2xx answers as ``ApiError``, and the base each call group is written against."""

from __future__ import annotations

import datetime
import email.utils
import json
from typing import Any
from urllib.parse import quote

import httpx

from im.client.errors import ApiError
from im.client.gateway_types import as_group_id

MAX_PAGE = 500  # the gateway's largest accepted `limit`
MAX_MEMBER_PAGE = 1000  # the largest `limit` of member and reader pages
MAX_SEARCH_PAGE = 100  # the largest `limit` of a search page


def _problem(response: httpx.Response) -> ApiError:
    """Map a non-2xx answer to ApiError, tolerating bodies that are not problem+json."""
    status = response.status_code
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        detail = body.get("detail")
        if detail is not None and not isinstance(detail, str):
            # e.g. a framework validation error list: keep it readable, not lost
            detail = json.dumps(detail, separators=(",", ":"))
        code = body.get("code")
        if not isinstance(code, str) or not code:
            code = _code_for_status(status)
        title = body.get("title")
        return ApiError(
            status,
            code,
            detail or (title if isinstance(title, str) else "") or response.reason_phrase,
            title if isinstance(title, str) else "",
            retry_after=_retry_after(response),
        )
    text = response.text.strip()[:500]
    return ApiError(
        status,
        _code_for_status(status),
        text or response.reason_phrase,
        retry_after=_retry_after(response),
    )


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def _code_for_status(status: int) -> str:
    return {
        400: "invalid_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        409: "conflict",
        422: "invalid_request",
        429: "rate_limited",
        503: "unavailable",
    }.get(status, f"http_{status}")


def _conv_path(conversation_id: str) -> str:
    # ids look like "d:1:2" / "g:7": keep ':' readable, escape anything else
    return quote(conversation_id, safe=":")


def _group_path(group_id: str | int) -> str:
    return f"/v1/groups/{_conv_path(as_group_id(group_id))}"


class GatewayCalls:
    """Base of the call groups mixed into ``GatewayClient``: they need its ``_request``
    (the client's own, in im/client/gateway.py, overrides this one)."""

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError
