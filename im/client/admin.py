"""Async client of the gateway's admin REST API (``/v1/admin``, docs/rest-api.md,
"Admin"), for operators: it authenticates with an admin token, never as a chat user.

    async with AdminClient("https://im.example", token) as admin:
        user = await admin.find_user("mallory")
        await admin.disable(user["user_id"])

Answers are the gateway's JSON dicts; failures raise ``ApiError`` as GatewayClient's do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httpx

from im.client.errors import ApiError
from im.client.gateway_http import _problem
from im.client.transports import tls_context

IMPORT_CHUNK = 5000  # users per import request (the gateway takes up to 10,000)
IMPORT_CONCURRENCY = 2  # requests in flight


class AdminClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        actor: str = "",
        timeout: float = 130.0,  # an import of plain passwords hashes for a while
        ca_file: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``actor``: who you are, for the audit log (sent as X-Admin-Actor; the token
        decides what you may do, this only names you)."""
        self.base_url = base_url.rstrip("/")
        headers = {"accept": "application/json", "authorization": f"Bearer {token}"}
        if actor:
            headers["x-admin-actor"] = actor
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            verify=tls_context(ca_file) if ca_file else True,
            headers=headers,
        )

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        try:
            response = await self._http.request(method, path, json=json_body, params=params)
        except httpx.TransportError as exc:
            raise ApiError(0, "unreachable", f"{self.base_url}: {exc!r}") from exc
        if response.status_code >= 400:
            raise _problem(response)
        return response.json() if response.content else None

    # ------------------------------------------------------------------ users

    async def user(self, user_id: int) -> dict[str, Any]:
        """{user_id, username, display_name, created_at, disabled, deleted}"""
        return await self._call("GET", f"/v1/admin/users/{int(user_id)}")

    async def find_user(self, username: str) -> dict[str, Any] | None:
        found = await self._call("GET", "/v1/admin/users", params={"username": username})
        users = found["users"]
        return users[0] if users else None

    async def resolve(self, user: str | int) -> int:
        """A user id from an id or a username (404 ApiError when there is none)."""
        text = str(user).strip()
        if text.isdigit():
            return int(text)
        found = await self.find_user(text)
        if found is None:
            raise ApiError(404, "not_found", f"no user named {text!r}")
        return int(found["user_id"])

    async def disable(self, user_id: int) -> dict[str, Any]:
        """Logins refused, every session ended, every socket kicked."""
        return await self._call("POST", f"/v1/admin/users/{int(user_id)}/disable")

    async def enable(self, user_id: int) -> dict[str, Any]:
        return await self._call("POST", f"/v1/admin/users/{int(user_id)}/enable")

    async def reset_password(self, user_id: int, password: str | None = None) -> dict[str, Any]:
        """A new password (``password``, or a generated one in the answer's
        ``password``); every session ends."""
        body = {"password": password} if password else None
        return await self._call(
            "POST", f"/v1/admin/users/{int(user_id)}/reset-password", json_body=body
        )

    async def delete(self, user_id: int, erase_messages: bool = False) -> dict[str, Any]:
        params = {"erase_messages": "true"} if erase_messages else None
        return await self._call("DELETE", f"/v1/admin/users/{int(user_id)}", params=params)

    async def sessions(self, user_id: int) -> dict[str, Any]:
        """{user, sessions: [{session_id, device_id, created_at, last_seen_at,
        expires_at, online, connector_id}]}"""
        return await self._call("GET", f"/v1/admin/users/{int(user_id)}/sessions")

    async def import_users(
        self,
        users: Iterable[dict[str, Any]],
        chunk: int = IMPORT_CHUNK,
        concurrency: int = IMPORT_CONCURRENCY,
    ) -> dict[str, Any]:
        """Imports ``users`` ({username, display_name?, password_hash? | password?}) in
        requests of ``chunk``, ``concurrency`` at a time (the gateway parses one while
        the database writes another); returns {imported, users, errors} over all of
        them, each ``index`` counted from the start of ``users``. A failed request
        raises; what the others imported stays (run the import again: the users already
        there come back as ``username_taken``)."""
        rows = list(users)
        gate = asyncio.Semaphore(max(1, concurrency))

        async def send(offset: int) -> dict[str, Any]:
            async with gate:
                batch = rows[offset : offset + chunk]
                result = await self._call(
                    "POST", "/v1/admin/users/import", json_body={"users": batch}
                )
            for key in ("users", "errors"):
                for row in result[key]:
                    row["index"] += offset
            return result

        results = await asyncio.gather(*(send(o) for o in range(0, len(rows), max(1, chunk))))
        return {
            "imported": sum(r["imported"] for r in results),
            "users": [u for r in results for u in r["users"]],
            "errors": [e for r in results for e in r["errors"]],
        }
