"""Async client of the gateway REST API (docs/rest-api.md), on ``httpx.AsyncClient``.

Users and conversations come back as the gateway's JSON dicts; messages are turned
into ``wire_pb2.Message`` so history and live deliveries have one type.

The calls are grouped by area in the ``gateway_*`` modules beside this one and mixed
into ``GatewayClient`` here, which holds the HTTP connection, the tokens and the
request plumbing they all go through.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from im.client.errors import ApiError
from im.client.gateway_account import AccountCalls
from im.client.gateway_attachments import AttachmentCalls
from im.client.gateway_conversations import ConversationCalls
from im.client.gateway_groups import GroupCalls
from im.client.gateway_http import MAX_MEMBER_PAGE, MAX_PAGE, MAX_SEARCH_PAGE, _problem
from im.client.gateway_messages import MessageCalls
from im.client.gateway_types import (
    GROUP_PREFIX,
    ConnectorInfo,
    HistoryPage,
    LoginResult,
    MemberPage,
    PostedMessage,
    SearchHit,
    SearchPage,
    as_group_id,
    message_from_json,
)
from im.client.group_lifecycle import GroupLifecycleCalls
from im.client.transports import tls_context

# Defined in gateway_types and gateway_http; callers import them from here (and from
# im.client), where they were defined before the calls were grouped by area.
__all__ = [
    "GROUP_PREFIX",
    "MAX_MEMBER_PAGE",
    "MAX_PAGE",
    "MAX_SEARCH_PAGE",
    "ConnectorInfo",
    "GatewayClient",
    "HistoryPage",
    "LoginResult",
    "MemberPage",
    "PostedMessage",
    "SearchHit",
    "SearchPage",
    "as_group_id",
    "message_from_json",
]

log = logging.getLogger("im.client")


class GatewayClient(
    AccountCalls,
    ConversationCalls,
    MessageCalls,
    GroupCalls,
    AttachmentCalls,
    GroupLifecycleCalls,
):
    """One gateway base URL, one bearer token (set by ``login``), and the session's
    refresh token, used by itself when the access token has expired."""

    refresh_token: str | None = None
    _refresh_lock: asyncio.Lock | None = None

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        ca_file: str | None = None,
    ) -> None:
        """``ca_file``: trust only this CA for an https gateway (a private or dev CA);
        otherwise the usual trusted CAs. Certificates are always verified."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.last_login: LoginResult | None = None
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            verify=tls_context(ca_file) if ca_file else True,
            headers={"accept": "application/json"},
        )

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ plumbing

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
    ) -> Any:
        """One call; an expired or revoked access token is refreshed once (when a
        refresh token is held) and the call repeated with the new one."""
        sent = self.token
        try:
            return await self._request_once(
                method, path, json_body=json_body, params=params, auth=auth
            )
        except ApiError as exc:
            if not (auth and exc.status == 401 and exc.code == "unauthorized"):
                raise
            if not self.refresh_token or not await self._refresh_after(sent):
                raise
        return await self._request_once(method, path, json_body=json_body, params=params, auth=auth)

    async def _refresh_after(self, sent: str | None) -> bool:
        """Refresh unless another call did since ``sent`` was used: a refresh token
        is spent by one refresh, and a second one with it would end the session."""
        if self._refresh_lock is None:
            self._refresh_lock = asyncio.Lock()
        async with self._refresh_lock:
            if self.token != sent:
                return self.token is not None
            try:
                await self.refresh()
            except ApiError as exc:
                if exc.status != 401:
                    raise
                return False
        return True

    async def _request_once(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
    ) -> Any:
        headers = {}
        if auth:
            if not self.token:
                raise ApiError(401, "unauthorized", "not logged in")
            headers["authorization"] = f"Bearer {self.token}"
        try:
            try:
                response = await self._http.request(
                    method, path, json=json_body, params=params, headers=headers
                )
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                # A pooled keep-alive connection the server had just closed: the request
                # never reached it, so one retry on a fresh connection is safe for
                # reads; writes are not retried (they may have been applied).
                if method != "GET":
                    raise
                log.debug("retrying %s %s after %r", method, path, exc)
                response = await self._http.request(
                    method, path, json=json_body, params=params, headers=headers
                )
        except httpx.TransportError as exc:
            # one exception type for callers: "gateway unreachable" is status 0
            raise ApiError(0, "unreachable", f"{self.base_url}: {exc!r}") from exc
        if response.status_code >= 400:
            raise _problem(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()
