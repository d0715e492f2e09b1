"""Async client of the gateway REST API (docs/rest-api.md), on ``httpx.AsyncClient``.

Users and conversations come back as the gateway's JSON dicts; messages are turned
into ``wire_pb2.Message`` so history and live deliveries have one type.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import email.utils
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from im.client import attachments
from im.client.errors import ApiError
from im.client.group_lifecycle import GroupLifecycleCalls
from im.client.transports import tls_context
from im.v1 import wire_pb2

log = logging.getLogger("im.client")

MAX_PAGE = 500  # the gateway's largest accepted `limit`
MAX_MEMBER_PAGE = 1000  # the largest `limit` of member and reader pages
MAX_SEARCH_PAGE = 100  # the largest `limit` of a search page
GROUP_PREFIX = "g:"


@dataclass(frozen=True, slots=True)
class ConnectorInfo:
    id: str
    tcp: str  # "host:port"
    ws: str  # "ws://host:port/ws" ("wss://" with TLS)
    tls: bool = False  # both endpoints speak TLS


@dataclass(frozen=True, slots=True)
class LoginResult:
    access_token: str
    token_type: str
    expires_in: int
    user_id: int
    device_id: str
    connector: ConnectorInfo
    heartbeat_interval: float  # seconds
    obtained_at: float  # time.monotonic() when the answer arrived
    refresh_token: str = ""  # for GatewayClient.refresh (empty from an older gateway)
    refresh_expires_in: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoginResult:
        conn = data.get("connector") or {}
        return cls(
            access_token=data["access_token"],
            token_type=data.get("token_type", "Bearer"),
            expires_in=int(data.get("expires_in", 0)),
            user_id=int(data["user_id"]),
            device_id=str(data["device_id"]),
            connector=ConnectorInfo(
                id=str(conn.get("id", "")),
                tcp=str(conn.get("tcp", "")),
                ws=str(conn.get("ws", "")),
                tls=bool(conn.get("tls", False)),
            ),
            heartbeat_interval=float(data.get("heartbeat_interval", 20.0)),
            obtained_at=time.monotonic(),
            refresh_token=str(data.get("refresh_token") or ""),
            refresh_expires_in=int(data.get("refresh_expires_in") or 0),
        )

    def expires_within(self, seconds: float) -> bool:
        """True if the token is (nearly) expired: re-login before connecting with it."""
        if self.expires_in <= 0:
            return False
        return time.monotonic() + seconds >= self.obtained_at + self.expires_in

    def address(self, transport: str) -> str:
        return self.connector.ws if transport == "ws" else self.connector.tcp


@dataclass(frozen=True, slots=True)
class HistoryPage:
    messages: list[wire_pb2.Message]
    has_more: bool


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """What ``post_message`` got back: the message is on the bus; its seq comes with
    its delivery (the sender's own sockets get it too) and in history."""

    msg_id: int
    conversation_id: str
    client_msg_id: str  # send again with it after a timeout or 503: stored once
    server_ts: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PostedMessage:
        return cls(
            msg_id=int(data["msg_id"]),  # a decimal string on REST
            conversation_id=str(data["conversation_id"]),
            client_msg_id=str(data["client_msg_id"]),
            server_ts=int(data["server_ts"]),
        )


@dataclass(frozen=True, slots=True)
class SearchHit:
    message: wire_pb2.Message
    snippet: str  # part of the body around the first match
    highlights: list[tuple[int, int]]  # [start, end) of each matching word in snippet


@dataclass(frozen=True, slots=True)
class SearchPage:
    hits: list[SearchHit]  # newest first
    next_cursor: str | None  # None on the last page


@dataclass(frozen=True, slots=True)
class MemberPage:
    members: list[dict[str, Any]]  # {user_id, role, joined_seq, read_seq, joined_at}
    next_cursor: str | None  # None on the last page


def as_group_id(group: str | int) -> str:
    """A group's conversation id (``"g:7"``) from ``7``, ``"7"`` or ``"g:7"``: a
    group's id is its conversation id, so this is also what to send to."""
    text = str(group).strip()
    return text if text.startswith(GROUP_PREFIX) else f"{GROUP_PREFIX}{text}"


def message_from_json(data: dict[str, Any]) -> wire_pb2.Message:
    """A REST message dict as the wire type (msg_id is a decimal string on REST)."""
    if data.get("body_b64") is not None:
        body = base64.b64decode(data["body_b64"])
    else:
        body = (data.get("text") or "").encode()
    return wire_pb2.Message(
        msg_id=int(data["msg_id"]),
        conversation_id=data["conversation_id"],
        seq=int(data["seq"]),
        sender_id=int(data.get("sender_id") or 0),
        sender_device=data.get("sender_device") or "",
        client_msg_id=data.get("client_msg_id") or "",
        content_type=data.get("content_type") or "",
        body=body,
        server_ts=int(data.get("server_ts") or 0),
        refers_to=int(data.get("refers_to") or 0),
        edited_at=int(data.get("edited_at") or 0),
        recalled=bool(data.get("recalled")),
        attachment_ids=[str(a) for a in data.get("attachment_ids") or []],
    )


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


class GatewayClient(GroupLifecycleCalls):
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

    # ---------------------------------------------------------------------- auth

    async def register(
        self, username: str, password: str, display_name: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"username": username, "password": password}
        if display_name is not None:
            body["display_name"] = display_name
        return await self._request("POST", "/v1/auth/register", json_body=body, auth=False)

    async def login(self, username: str, password: str, device_id: str) -> LoginResult:
        data = await self._request(
            "POST",
            "/v1/auth/login",
            json_body={"username": username, "password": password, "device_id": device_id},
            auth=False,
        )
        return self._logged_in(LoginResult.from_json(data))

    def _logged_in(self, result: LoginResult) -> LoginResult:
        self.token = result.access_token
        self.refresh_token = result.refresh_token or None
        self.last_login = result
        return result

    async def refresh(self) -> LoginResult:
        """New access and refresh tokens (and connector) for this session, without the
        password. Raises ApiError 401 when the session has ended (log in again)."""
        if not self.refresh_token:
            raise ApiError(401, "unauthorized", "no refresh token: log in first")
        try:
            data = await self._request_once(
                "POST",
                "/v1/auth/refresh",
                json_body={"refresh_token": self.refresh_token},
                auth=False,
            )
        except ApiError as exc:
            if exc.status == 401:
                self.token = self.refresh_token = None  # the session is over
            raise
        return self._logged_in(LoginResult.from_json(data))

    async def logout(self) -> None:
        await self._request("POST", "/v1/auth/logout")
        self.token = self.refresh_token = None

    async def logout_all(self) -> None:
        """End every session of this user (every device), this one included."""
        await self._request("POST", "/v1/auth/logout-all")
        self.token = self.refresh_token = None

    async def change_password(self, current_password: str, new_password: str) -> None:
        """Set a new password; every other session of the user ends, this one stays."""
        await self._request(
            "POST",
            "/v1/users/me/password",
            json_body={"current_password": current_password, "new_password": new_password},
        )

    # --------------------------------------------------------------------- users

    async def me(self) -> dict[str, Any]:
        return await self._request("GET", "/v1/users/me")

    async def user(self, user_id: int) -> dict[str, Any]:
        return await self._request("GET", f"/v1/users/{int(user_id)}")

    async def user_by_name(self, username: str) -> dict[str, Any] | None:
        data = await self._request("GET", "/v1/users", params={"username": username})
        users = data.get("users") or []
        return users[0] if users else None

    # ------------------------------------------------------------------ privacy

    async def block(self, user_id: int) -> None:
        """No 1:1 messages either way, no group invites from them, no presence."""
        await self._request("PUT", f"/v1/users/{int(user_id)}/block")

    async def unblock(self, user_id: int) -> None:
        await self._request("DELETE", f"/v1/users/{int(user_id)}/block")

    async def blocks(self) -> list[int]:
        """The users this user blocked."""
        data = await self._request("GET", "/v1/users/me/blocks")
        return [int(uid) for uid in data.get("user_ids") or []]

    async def privacy(self) -> dict[str, Any]:
        return await self._request("GET", "/v1/users/me/privacy")

    async def set_privacy(self, *, invites_from_contacts_only: bool) -> dict[str, Any]:
        return await self._request(
            "PATCH",
            "/v1/users/me/privacy",
            json_body={"invites_from_contacts_only": bool(invites_from_contacts_only)},
        )

    # ------------------------------------------------------------- conversations

    async def direct_conversation(self, peer_id: int) -> dict[str, Any]:
        return await self._request(
            "POST", "/v1/conversations/direct", json_body={"peer_id": int(peer_id)}
        )

    async def conversations(self) -> list[dict[str, Any]]:
        data = await self._request("GET", "/v1/conversations")
        return list(data.get("conversations") or [])

    async def conversation_presence(self, conversation_id: str) -> list[dict[str, Any]]:
        """Each other member's ``{user_id, online, last_seen_ms}`` (null: unknown or hidden)."""
        data = await self._request(
            "GET", f"/v1/conversations/{_conv_path(conversation_id)}/presence"
        )
        return list(data.get("members") or [])

    async def my_presence(self) -> dict[str, Any]:
        return await self._request("GET", "/v1/users/me/presence")

    async def set_presence_visible(self, visible: bool) -> dict[str, Any]:
        """Show (True) or hide (False) this user's online state and last seen."""
        return await self._request(
            "PUT", "/v1/users/me/presence", json_body={"visible": bool(visible)}
        )

    async def sync(self) -> list[dict[str, Any]]:
        data = await self._request("GET", "/v1/sync")
        return list(data.get("conversations") or [])

    async def update_settings(
        self,
        conversation_id: str,
        *,
        muted_until: int | None = None,
        mute_for_seconds: int | None = None,
        pinned: bool | None = None,
        archived: bool | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Change your own settings of a conversation; only the arguments given change.
        ``muted_until``: ms since the epoch, 0 unmutes, -1 mutes forever. Returns
        ``{muted, muted_until, pinned, archived, name, updated_at}``; your other online
        devices get a ``ConversationSettingsChanged`` event."""
        fields = {
            "muted_until": muted_until,
            "mute_for_seconds": mute_for_seconds,
            "pinned": pinned,
            "archived": archived,
            "name": name,
        }
        return await self._request(
            "PATCH",
            f"/v1/conversations/{_conv_path(conversation_id)}/settings",
            json_body={k: v for k, v in fields.items() if v is not None},
        )

    async def history(
        self, conversation_id: str, after_seq: int = 0, limit: int = 100
    ) -> HistoryPage:
        data = await self._request(
            "GET",
            f"/v1/conversations/{_conv_path(conversation_id)}/messages",
            params={"after_seq": int(after_seq), "limit": max(1, min(int(limit), MAX_PAGE))},
        )
        messages = [message_from_json(m) for m in data.get("messages") or []]
        return HistoryPage(messages=messages, has_more=bool(data.get("has_more")))

    async def history_all(
        self,
        conversation_id: str,
        after_seq: int = 0,
        *,
        page_size: int = MAX_PAGE,
        until_seq: int | None = None,
    ) -> AsyncIterator[wire_pb2.Message]:
        """Every message after ``after_seq`` (up to ``until_seq`` if given), page by page."""
        cursor = after_seq
        while True:
            page = await self.history(conversation_id, cursor, page_size)
            for message in page.messages:
                if until_seq is not None and message.seq > until_seq:
                    return
                cursor = max(cursor, message.seq)
                yield message
            if not page.has_more or not page.messages:
                return
            if until_seq is not None and cursor >= until_seq:
                return

    async def post_message(
        self,
        conversation_id: str,
        text: str | None = None,
        *,
        body: bytes | None = None,
        content_type: str = "text/plain",
        client_msg_id: str | None = None,
        attachment_ids: list[str] | None = None,
    ) -> PostedMessage:
        """Send a message over REST, without a socket: ``text``, or ``body`` bytes.

        Idempotent by ``client_msg_id`` (a new UUID when None): after an ApiError 503 or
        a timeout, call again with the same one and the message is stored once. A 429
        carries ``retry_after``."""
        if (text is None) == (body is None):
            raise ValueError("give exactly one of text and body")
        payload: dict[str, Any] = {
            "client_msg_id": client_msg_id or str(uuid.uuid4()),
            "content_type": content_type,
        }
        if text is not None:
            payload["text"] = text
        else:
            payload["body_base64"] = base64.b64encode(body or b"").decode("ascii")
        if attachment_ids:
            payload["attachment_ids"] = list(attachment_ids)
        data = await self._request(
            "POST", f"/v1/conversations/{_conv_path(conversation_id)}/messages", json_body=payload
        )
        return PostedMessage.from_json(data)

    async def search(
        self,
        query: str,
        conversation_id: str | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> SearchPage:
        """Text messages of my conversations holding every word of ``query`` (whole
        words, any case), newest first; only ``conversation_id`` when given. Pass
        ``next_cursor`` back as ``cursor`` for the older ones."""
        params: dict[str, Any] = {"q": query, "limit": max(1, min(int(limit), MAX_SEARCH_PAGE))}
        if conversation_id is not None:
            params["conversation_id"] = conversation_id
        if cursor:
            params["cursor"] = cursor
        data = await self._request("GET", "/v1/search", params=params)
        hits = [
            SearchHit(
                message=message_from_json(r["message"]),
                snippet=r["snippet"]["text"],
                highlights=[(int(a), int(b)) for a, b in r["snippet"]["highlights"]],
            )
            for r in data.get("results") or []
        ]
        return SearchPage(hits=hits, next_cursor=data.get("next_cursor"))

    async def ack(self, conversation_id: str, seq: int) -> None:
        await self._request(
            "POST", f"/v1/conversations/{_conv_path(conversation_id)}/ack", json_body={"seq": seq}
        )

    async def read(self, conversation_id: str, seq: int) -> None:
        await self._request(
            "POST", f"/v1/conversations/{_conv_path(conversation_id)}/read", json_body={"seq": seq}
        )

    async def recall(self, conversation_id: str, msg_id: int) -> dict[str, Any]:
        """Recall a message (the sender within the recall window, a group's owner or
        admin at any time). Returns the recall event ``{msg_id, conversation_id,
        refers_to, content_type, server_ts}``; retrying is safe."""
        path = f"/v1/conversations/{_conv_path(conversation_id)}/messages/{int(msg_id)}/recall"
        return await self._request("POST", path)

    async def edit(
        self, conversation_id: str, msg_id: int, text: str, client_msg_id: str | None = None
    ) -> dict[str, Any]:
        """Replace the text of one's own text message (within the edit window).
        Returns the edit event; with ``client_msg_id``, retrying is safe."""
        body: dict[str, Any] = {"text": text}
        if client_msg_id:
            body["client_msg_id"] = client_msg_id
        path = f"/v1/conversations/{_conv_path(conversation_id)}/messages/{int(msg_id)}"
        return await self._request("PATCH", path, json_body=body)

    # -------------------------------------------------------------------- groups

    async def create_group(
        self, name: str, member_ids: list[int], history_visible: bool = False
    ) -> dict[str, Any]:
        """Create a group owned by the caller; returns it (``conversation_id`` is the
        group id). At most 5000 member ids per call: add more with ``add_members``."""
        body = {
            "name": name,
            "member_ids": [int(uid) for uid in member_ids],
            "history_visible": bool(history_visible),
        }
        return await self._request("POST", "/v1/groups", json_body=body)

    async def group(self, group_id: str | int) -> dict[str, Any]:
        """The group with ``my_role`` (owner, admin or member)."""
        return await self._request("GET", _group_path(group_id))

    async def add_members(self, group_id: str | int, user_ids: list[int]) -> list[int]:
        """Add users (owner/admin only); returns those actually added."""
        data = await self._request(
            "POST",
            f"{_group_path(group_id)}/members",
            json_body={"user_ids": [int(uid) for uid in user_ids]},
        )
        return [int(uid) for uid in data.get("added") or []]

    async def remove_member(self, group_id: str | int, user_id: int) -> None:
        await self._request("DELETE", f"{_group_path(group_id)}/members/{int(user_id)}")

    async def leave_group(self, group_id: str | int) -> None:
        await self._request("POST", f"{_group_path(group_id)}/leave")

    async def members(
        self, group_id: str | int, cursor: str | None = None, limit: int = 100
    ) -> MemberPage:
        params: dict[str, Any] = {"limit": max(1, min(int(limit), MAX_MEMBER_PAGE))}
        if cursor:
            params["cursor"] = cursor
        data = await self._request("GET", f"{_group_path(group_id)}/members", params=params)
        return MemberPage(
            members=list(data.get("members") or []), next_cursor=data.get("next_cursor") or None
        )

    async def members_all(
        self, group_id: str | int, *, page_size: int = MAX_MEMBER_PAGE
    ) -> AsyncIterator[dict[str, Any]]:
        """Every member, page by page (one page in memory at a time)."""
        cursor: str | None = None
        while True:
            page = await self.members(group_id, cursor, page_size)
            for member in page.members:
                yield member
            if page.next_cursor is None or not page.members:
                return
            cursor = page.next_cursor

    async def set_role(self, group_id: str | int, user_id: int, role: str) -> dict[str, Any]:
        """``role``: "admin" or "member" (owner only); returns the member."""
        return await self._request(
            "PATCH", f"{_group_path(group_id)}/members/{int(user_id)}", json_body={"role": role}
        )

    # ------------------------------------------------------------------ receipts

    # --------------------------------------------------------------- attachments
    # Streamed both ways; see im/client/attachments.py.

    async def upload_file(
        self, path: str | os.PathLike[str], content_type: str | None = None
    ) -> dict[str, Any]:
        """Upload a file: ``{attachment_id, size, sha256, content_type, filename, ...}``;
        the type is guessed from the name unless given."""
        return await attachments.upload_file(self, path, content_type)

    async def upload_bytes(
        self, data: bytes, filename: str, content_type: str | None = None
    ) -> dict[str, Any]:
        return await attachments.upload_bytes(self, data, filename, content_type)

    async def attachment_limits(self) -> dict[str, Any]:
        """``{max_bytes, content_types, max_per_message}``."""
        return await attachments.limits(self)

    async def attachment(self, attachment_id: str) -> dict[str, Any]:
        """An attachment's metadata (owner or member of a conversation it was sent to)."""
        return await attachments.metadata(self, attachment_id)

    async def download(self, attachment_id: str) -> bytes:
        return await attachments.download(self, attachment_id)

    async def download_to(self, attachment_id: str, path: str | os.PathLike[str]) -> int:
        """Stream an attachment into a file; returns the bytes written."""
        return await attachments.download_to(self, attachment_id, path)

    async def receipts(
        self,
        conversation_id: str,
        seq: int,
        cursor: str | None = None,
        limit: int = 100,
        list: str = "both",  # named like the REST parameter; shadows the builtin here only
    ) -> dict[str, Any]:
        """Read receipts of message ``seq``: ``{conversation_id, seq, sender_id,
        read_count, unread_count, read_by, unread}``; ``read_by``/``unread`` are
        ``{user_ids, next_cursor}`` pages (None when not asked for by ``list``:
        "read", "unread" or "both")."""
        params: dict[str, Any] = {
            "seq": int(seq),
            "limit": max(1, min(int(limit), MAX_MEMBER_PAGE)),
            "list": list,
        }
        if cursor:
            params["cursor"] = cursor
        return await self._request(
            "GET", f"/v1/conversations/{_conv_path(conversation_id)}/receipts", params=params
        )
