"""HTTP surface of the gateway (FastAPI): routes, request/response models, problem
details for every error, and Prometheus metrics. See docs/rest-api.md."""

from __future__ import annotations

import base64
import logging
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from im.auth import Claims
from im.v1 import group_pb2, user_pb2, wire_pb2
from im.validation import MAX_INT64
from services.gateway.conversations import ConversationView, ReceiptsView
from services.gateway.errors import ApiError, unauthorized
from services.gateway.groups import GroupView, group_id_from_path, role_name
from services.gateway.guards import BodyLimitMiddleware, SecurityHeadersMiddleware
from services.gateway.inputs import (
    AfterSeqQuery,
    DisplayName,
    GroupName,
    PageCursor,
    Seq,
    UserId,
    UserIdPath,
)
from services.gateway.service import Gateway, LoginResult

log = logging.getLogger("im.gateway")

PROBLEM_BASE = "https://im.example/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
MAX_IDS_PER_REQUEST = 5000  # user ids per create/add: bounds one request's work
MAX_GROUP_NAME = 255

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


# ------------------------------------------------------------------------ models
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


class RegisterRequest(BaseModel):
    username: str = Field(
        min_length=1, max_length=64, description="Unique login name.", examples=["alice"]
    )
    password: str = Field(
        min_length=1, max_length=1024, description="Password (hashed with argon2id)."
    )
    display_name: DisplayName = Field(
        "",
        max_length=128,
        description="Name shown to others (optional); no control or bidi characters.",
        examples=["Alice"],
    )


class RegisteredUser(BaseModel):
    user_id: int = Field(description="Numeric user id.")
    username: str = Field(description="Login name.")
    display_name: str = Field(description="Name shown to others.")


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64, description="Login name.")
    password: str = Field(min_length=1, max_length=1024, description="Password.")
    device_id: str = Field(
        pattern=DEVICE_ID_PATTERN,
        description="Stable id of this device or app install, 1-64 characters of "
        "`A-Z a-z 0-9 _ . : -`. A new login of the same device replaces its older "
        "connection.",
        examples=["phone-1"],
    )


class ConnectorAddress(BaseModel):
    id: str = Field(description="Connector id (stable per connector pod).")
    tcp: str = Field(description="`host:port` of the length-prefixed TCP endpoint.")
    ws: str = Field(description="WebSocket URL, `ws://host:port/ws` (`wss://` with TLS).")
    tls: bool = Field(False, description="Both endpoints speak TLS: verify the certificate.")


class LoginResponse(BaseModel):
    access_token: str = Field(description="JWT (RS256); send it as `Bearer` and in `Auth`.")
    token_type: Literal["Bearer"] = Field("Bearer", description="Always `Bearer`.")
    expires_in: int = Field(description="Seconds until the token expires.")
    user_id: int = Field(description="The logged-in user.")
    device_id: str = Field(description="The device id the token is bound to.")
    connector: ConnectorAddress = Field(description="Where to open the real-time socket.")
    heartbeat_interval: float = Field(description="Seconds between client pings.")
    refresh_token: str = Field(
        description="Opaque; `POST /v1/auth/refresh` trades it for new tokens, once (a "
        "spent one used again ends the session). Keep it secret."
    )
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires.")


class UserOut(BaseModel):
    user_id: int = Field(description="Numeric user id.")
    username: str = Field(description="Login name.")
    display_name: str = Field(description="Name shown to others.")
    created_at: int = Field(description="Registration time, milliseconds since the epoch.")


class UserList(BaseModel):
    users: list[UserOut] = Field(description="Matching users (0 or 1 for a username).")


class DirectRequest(BaseModel):
    peer_id: UserId = Field(description="The other user of the 1:1 conversation.")


class ConversationOut(BaseModel):
    conversation_id: str = Field(description='`"d:<low>:<high>"` (direct) or `"g:<id>"`.')
    kind: Literal["direct", "group"] = Field(description="Conversation kind.")
    name: str = Field(description="Group name; empty for direct conversations.")
    peer_id: int | None = Field(description="The other user (direct only, else null).")
    last_seq: int = Field(description="Seq of the newest stored message (0: none).")
    delivered_seq: int = Field(description="This user's delivered cursor.")
    read_seq: int = Field(description="This user's read cursor.")
    unread: int = Field(
        description="Messages after the read cursor (and, in a group, after the user "
        "joined): last_seq - max(read_seq, joined_seq)."
    )


class ConversationList(BaseModel):
    conversations: list[ConversationOut] = Field(description="The user's conversations.")


class MessageOut(BaseModel):
    msg_id: str = Field(description="Unique, time-ordered 64-bit id as a decimal string.")
    conversation_id: str = Field(description="Conversation id.")
    seq: int = Field(description="Position in the conversation (gap-free from 1).")
    sender_id: int = Field(description="Sender's user id.")
    sender_device: str = Field(description="Sender's device id.")
    client_msg_id: str = Field(description="The sender's idempotency key.")
    content_type: str = Field(description='MIME type of the body, e.g. "text/plain".')
    body_b64: str = Field(description="Body, standard base64.")
    text: str | None = Field(
        description="The body as UTF-8 text when content_type starts with `text/`, else null."
    )
    server_ts: int = Field(description="Server time of acceptance, ms since the epoch.")


class MessagePage(BaseModel):
    messages: list[MessageOut] = Field(description="Messages in ascending seq order.")
    has_more: bool = Field(description="More messages follow the last one of this page.")


class CursorRequest(BaseModel):
    seq: Seq = Field(description="Cumulative: everything up to this seq.")


RoleName = Literal["owner", "admin", "member"]


class CreateGroupRequest(BaseModel):
    name: GroupName = Field(
        min_length=1,
        max_length=MAX_GROUP_NAME,
        description="Group name; no control or bidi characters.",
        examples=["team"],
    )
    member_ids: list[UserId] = Field(
        default_factory=list,
        max_length=MAX_IDS_PER_REQUEST,
        description=f"Users to add besides the caller (at most {MAX_IDS_PER_REQUEST}; "
        "duplicates and the caller's own id are ignored). Every id must exist.",
    )
    history_visible: bool = Field(
        False,
        description="Members added later can read messages from before they joined.",
    )


class GroupOut(BaseModel):
    conversation_id: str = Field(description='The group\'s id, its conversation id `"g:<id>"`.')
    name: str = Field(description="Group name.")
    owner_id: int = Field(description="The owner (the creator).")
    member_count: int = Field(description="Members, the owner included.")
    history_visible: bool = Field(description="New members can read older messages.")
    created_at: int = Field(description="Creation time, milliseconds since the epoch.")
    my_role: RoleName = Field(description="The caller's role in the group.")


class AddMembersRequest(BaseModel):
    user_ids: list[UserId] = Field(
        min_length=1,
        max_length=MAX_IDS_PER_REQUEST,
        description=f"Users to add (1 to {MAX_IDS_PER_REQUEST}). Every id must exist.",
    )


class AddedMembers(BaseModel):
    added: list[int] = Field(
        description="The users that were added (those already members are left out)."
    )


class MemberOut(BaseModel):
    user_id: int = Field(description="The member.")
    role: RoleName = Field(description="Role in the group.")
    joined_seq: int = Field(description="The member sees messages with seq > joined_seq.")
    read_seq: int = Field(description="The member's read cursor.")
    joined_at: int = Field(description="When the member joined, ms since the epoch.")


class MemberPage(BaseModel):
    members: list[MemberOut] = Field(description="Members in ascending user id order.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class RoleRequest(BaseModel):
    role: Literal["admin", "member"] = Field(
        description="The new role. Ownership cannot be transferred."
    )


class ReaderPage(BaseModel):
    user_ids: list[int] = Field(description="Members in ascending user id order.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` (with `list` set to this list) for the next page; "
        "null on the last page."
    )


class ReceiptsOut(BaseModel):
    conversation_id: str = Field(description="Conversation id.")
    seq: int = Field(description="The message asked about.")
    sender_id: int = Field(description="Its sender (counted in neither list).")
    read_count: int = Field(description="Members (not the sender) with read_seq >= seq.")
    unread_count: int = Field(
        description="Members (not the sender) who had joined before seq and not read it."
    )
    read_by: ReaderPage | None = Field(
        description="A page of who has read it; null unless `list` is read or both."
    )
    unread: ReaderPage | None = Field(
        description="A page of who has not read it; null unless `list` is unread or both."
    )


class ReadyStatus(BaseModel):
    status: Literal["ready", "not_ready"] = Field(description="Overall readiness.")
    checks: dict[str, str] = Field(
        description="Per dependency (user, group, message_store, connectors): `ok` or why not."
    )


# ---------------------------------------------------------------------- mapping
def _user(u: user_pb2.User) -> UserOut:
    return UserOut(
        user_id=u.user_id,
        username=u.username,
        display_name=u.display_name,
        created_at=u.created_at,
    )


def _conversation(v: ConversationView) -> ConversationOut:
    return ConversationOut(
        conversation_id=v.conversation_id,
        kind=v.kind,  # type: ignore[arg-type]
        name=v.name,
        peer_id=v.peer_id,
        last_seq=v.last_seq,
        delivered_seq=v.delivered_seq,
        read_seq=v.read_seq,
        unread=v.unread,
    )


def _message(m: wire_pb2.Message) -> MessageOut:
    text = None
    if m.content_type.startswith("text/"):
        try:
            text = m.body.decode("utf-8")
        except UnicodeDecodeError:
            text = None  # body_b64 still carries it
    return MessageOut(
        msg_id=str(m.msg_id),
        conversation_id=m.conversation_id,
        seq=m.seq,
        sender_id=m.sender_id,
        sender_device=m.sender_device,
        client_msg_id=m.client_msg_id,
        content_type=m.content_type,
        body_b64=base64.b64encode(m.body).decode("ascii"),
        text=text,
        server_ts=m.server_ts,
    )


def _group(v: GroupView) -> GroupOut:
    c = v.conversation
    return GroupOut(
        conversation_id=c.conversation_id,
        name=c.name,
        owner_id=c.owner_id,
        member_count=c.member_count,
        history_visible=c.history_visible,
        created_at=c.created_at,
        my_role=v.my_role,  # type: ignore[arg-type]
    )


def _member_out(m: group_pb2.Member) -> MemberOut:
    return MemberOut(
        user_id=m.user_id,
        role=role_name(m.role),  # type: ignore[arg-type]
        joined_seq=m.joined_seq,
        read_seq=m.read_seq,
        joined_at=m.joined_at,
    )


def _reader_page(page: tuple[list[int], str | None] | None) -> ReaderPage | None:
    if page is None:
        return None
    return ReaderPage(user_ids=page[0], next_cursor=page[1])


def _receipts(v: ReceiptsView) -> ReceiptsOut:
    return ReceiptsOut(
        conversation_id=v.conversation_id,
        seq=v.seq,
        sender_id=v.sender_id,
        read_count=v.read_count,
        unread_count=v.unread_count,
        read_by=_reader_page(v.read_by),
        unread=_reader_page(v.unread),
    )


# ------------------------------------------------------------------- problems
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


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route may answer."""
    return {
        s: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": "Problem"}
        for s in statuses
    }


# -------------------------------------------------------------------- metrics
class Metrics:
    """Request counts and latency by route template (not raw path: bounded labels)."""

    def __init__(self) -> None:
        # A registry per app: several gateways in one process (tests) do not collide.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "im_gateway_http_requests_total",
            "HTTP requests.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "im_gateway_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route"],
            registry=self.registry,
        )


def _route_label(scope: Scope) -> str:
    """The route template (bounded label cardinality), never the raw path."""
    route = scope.get("route")  # set by FastAPI's own routes
    if route is None:
        # Plain Starlette routes (/docs, /openapi.json) do not record themselves.
        app = scope.get("app")
        for candidate in getattr(app, "routes", ()):
            if candidate.matches(scope)[0] is Match.FULL:
                route = candidate
                break
    return getattr(route, "path", None) or "unmatched"


class ObserveMiddleware:
    """Records metrics, and turns any unhandled exception into a 500 problem without
    a traceback in the answer (it goes to the log, once)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if response_started:
                raise  # too late for a problem body; let the server close the stream
            await problem(500, "internal", "internal error")(scope, receive, send_wrapper)
        finally:
            label = _route_label(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(method, label, str(status)).inc()
            self.metrics.latency.labels(method, label).observe(time.perf_counter() - started)


# ------------------------------------------------------------------ dependencies
_bearer = HTTPBearer(auto_error=False, description="Access token from `POST /v1/auth/login`.")


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(_gateway)]


async def _claims(
    gateway: GatewayDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Claims:
    if credentials is None:
        raise unauthorized("missing bearer token")
    return await gateway.authenticate(credentials.credentials)


Auth = Annotated[Claims, Depends(_claims)]
ConversationId = Annotated[
    str, Path(max_length=64, description='Conversation id, e.g. "d:1:2" or "g:7".')
]


def _group_id(
    group_id: Annotated[
        str,
        Path(
            max_length=64,
            description='The group\'s conversation id "g:<digits>" (":" may be sent as '
            '"%3A"), or just the digits.',
        ),
    ],
) -> str:
    return group_id_from_path(group_id)


GroupId = Annotated[str, Depends(_group_id)]
MemberId = Annotated[int, Path(gt=0, le=MAX_INT64, description="The member's user id.")]

router = APIRouter()


# -------------------------------------------------------------------------- auth
@router.post(
    "/v1/auth/register",
    status_code=201,
    response_model=RegisteredUser,
    tags=["auth"],
    responses=_responses(409, 422, 429, 503),
)
async def register(gateway: GatewayDep, body: RegisterRequest, request: Request) -> RegisteredUser:
    """Create a user. Registrations per client address are limited (429)."""
    address = gateway.limits.address_of(request)
    u = await gateway.register(body.username, body.password, body.display_name, address)
    return RegisteredUser(user_id=u.user_id, username=u.username, display_name=u.display_name)


@router.post(
    "/v1/auth/login",
    response_model=LoginResponse,
    tags=["auth"],
    responses=_responses(401, 422, 429, 503),
)
async def login(gateway: GatewayDep, body: LoginRequest, request: Request) -> LoginResponse:
    """Check the password, issue an access and a refresh token and assign a connector.
    Failed logins back off per (username, client address) and per address (429)."""
    address = gateway.limits.address_of(request)
    r = await gateway.login(body.username, body.password, body.device_id, address)
    return login_response(r)


def login_response(r: LoginResult) -> LoginResponse:
    info = r.connector
    return LoginResponse(
        access_token=r.access_token,
        expires_in=r.expires_in,
        user_id=r.user_id,
        device_id=r.device_id,
        connector=ConnectorAddress(
            id=info.connector_id,
            tcp=f"{info.host}:{info.tcp_port}",
            ws=f"{'wss' if info.tls else 'ws'}://{info.host}:{info.ws_port}/ws",
            tls=info.tls,
        ),
        heartbeat_interval=r.heartbeat_interval,
        refresh_token=r.refresh_token,
        refresh_expires_in=r.refresh_expires_in,
    )


@router.post(
    "/v1/auth/logout",
    status_code=204,
    response_class=Response,
    tags=["auth"],
    responses=_responses(401, 503),
)
async def logout(gateway: GatewayDep, claims: Auth) -> Response:
    """Revoke this token's session and kick the connection using it."""
    await gateway.logout(claims)
    return Response(status_code=204)


# ------------------------------------------------------------------------- users
@router.get(
    "/v1/users/me", response_model=UserOut, tags=["users"], responses=_responses(401, 404, 503)
)
async def me(gateway: GatewayDep, claims: Auth) -> UserOut:
    """The logged-in user."""
    return _user(await gateway.get_user(claims.user_id))


@router.get(
    "/v1/users/{user_id}",
    response_model=UserOut,
    tags=["users"],
    responses=_responses(401, 404, 422, 503),
)
async def user_by_id(gateway: GatewayDep, _auth: Auth, user_id: UserIdPath) -> UserOut:
    """A user by id."""
    return _user(await gateway.get_user(user_id))


@router.get(
    "/v1/users", response_model=UserList, tags=["users"], responses=_responses(401, 422, 503)
)
async def users_by_name(
    gateway: GatewayDep,
    _auth: Auth,
    username: Annotated[str, Query(min_length=1, max_length=64, description="Exact username.")],
) -> UserList:
    """Find a user by username."""
    users = await gateway.get_users(usernames=[username])
    return UserList(users=[_user(u) for u in users])


# ----------------------------------------------------------------- conversations
@router.post(
    "/v1/conversations/direct",
    response_model=ConversationOut,
    tags=["conversations"],
    responses=_responses(401, 404, 422, 503),
)
async def open_direct(gateway: GatewayDep, claims: Auth, body: DirectRequest) -> ConversationOut:
    """Get or create the 1:1 conversation with `peer_id`."""
    return _conversation(await gateway.conversation_ops.open_direct(claims.user_id, body.peer_id))


async def _conversation_list(gateway: Gateway, claims: Claims) -> ConversationList:
    views = await gateway.conversation_ops.conversations(claims.user_id)
    return ConversationList(conversations=[_conversation(v) for v in views])


@router.get(
    "/v1/conversations",
    response_model=ConversationList,
    tags=["conversations"],
    responses=_responses(401, 503),
)
async def conversations(gateway: GatewayDep, claims: Auth) -> ConversationList:
    """The user's conversations with their cursors and unread counts."""
    return await _conversation_list(gateway, claims)


@router.get(
    "/v1/sync",
    response_model=ConversationList,
    tags=["conversations"],
    responses=_responses(401, 503),
)
async def sync(gateway: GatewayDep, claims: Auth) -> ConversationList:
    """Same as `GET /v1/conversations`: call it after (re)connecting, then pull each
    conversation's gap with `GET /v1/conversations/{id}/messages?after_seq=...`."""
    return await _conversation_list(gateway, claims)


@router.get(
    "/v1/conversations/{conversation_id}/messages",
    response_model=MessagePage,
    tags=["conversations"],
    responses=_responses(401, 403, 404, 422, 503),
)
async def history(
    gateway: GatewayDep,
    claims: Auth,
    conversation_id: ConversationId,
    after_seq: AfterSeqQuery = 0,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
) -> MessagePage:
    """Messages with seq > after_seq, ascending; 403 for a non-member."""
    messages, has_more = await gateway.conversation_ops.history(
        claims.user_id, conversation_id, after_seq, limit
    )
    return MessagePage(messages=[_message(m) for m in messages], has_more=has_more)


@router.post(
    "/v1/conversations/{conversation_id}/ack",
    status_code=204,
    response_class=Response,
    tags=["conversations"],
    responses=_responses(401, 403, 404, 422, 503),
)
async def ack(
    gateway: GatewayDep, claims: Auth, conversation_id: ConversationId, body: CursorRequest
) -> Response:
    """Everything up to `seq` has been delivered (the cursor never moves back)."""
    await gateway.conversation_ops.update_cursor(
        claims.user_id, conversation_id, body.seq, read=False, device_id=claims.device_id
    )
    return Response(status_code=204)


@router.post(
    "/v1/conversations/{conversation_id}/read",
    status_code=204,
    response_class=Response,
    tags=["conversations"],
    responses=_responses(401, 403, 404, 422, 503),
)
async def read(
    gateway: GatewayDep, claims: Auth, conversation_id: ConversationId, body: CursorRequest
) -> Response:
    """Everything up to `seq` has been read (moves the delivered cursor too)."""
    await gateway.conversation_ops.update_cursor(
        claims.user_id, conversation_id, body.seq, read=True, device_id=claims.device_id
    )
    return Response(status_code=204)


@router.get(
    "/v1/conversations/{conversation_id}/receipts",
    response_model=ReceiptsOut,
    tags=["conversations"],
    responses=_responses(401, 403, 404, 422, 503),
)
async def receipts(
    gateway: GatewayDep,
    claims: Auth,
    conversation_id: ConversationId,
    seq: Annotated[int, Query(ge=1, le=MAX_INT64, description="The message's seq.")],
    cursor: PageCursor = "",
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size of each list.")] = 100,
    list_: Annotated[
        Literal["read", "unread", "both"],
        Query(alias="list", description="Which member list(s) to page through."),
    ] = "both",
) -> ReceiptsOut:
    """Read receipts of message `seq`: counts, and pages of who has and has not read
    it (the sender excluded), from the members' read cursors. Members only."""
    view = await gateway.conversation_ops.receipts(
        claims.user_id, conversation_id, seq, cursor, limit, list_
    )
    return _receipts(view)


# ------------------------------------------------------------------------ groups
@router.post(
    "/v1/groups",
    status_code=201,
    response_model=GroupOut,
    tags=["groups"],
    responses=_responses(401, 409, 422, 503),
)
async def create_group(gateway: GatewayDep, claims: Auth, body: CreateGroupRequest) -> GroupOut:
    """Create a group; the caller becomes its owner."""
    view = await gateway.group_ops.create_group(
        claims.user_id, body.name, body.member_ids, body.history_visible
    )
    return _group(view)


@router.get(
    "/v1/groups/{group_id}",
    response_model=GroupOut,
    tags=["groups"],
    responses=_responses(401, 403, 404, 503),
)
async def get_group(gateway: GatewayDep, claims: Auth, group_id: GroupId) -> GroupOut:
    """A group and the caller's role in it. Members only."""
    return _group(await gateway.group_ops.get_group(claims.user_id, group_id))


@router.post(
    "/v1/groups/{group_id}/members",
    response_model=AddedMembers,
    tags=["groups"],
    responses=_responses(401, 403, 404, 409, 422, 503),
)
async def add_members(
    gateway: GatewayDep, claims: Auth, group_id: GroupId, body: AddMembersRequest
) -> AddedMembers:
    """Add members (owner or admin). They see messages sent from now on, or the
    whole history if the group was created with `history_visible`."""
    added = await gateway.group_ops.add_members(claims.user_id, group_id, body.user_ids)
    return AddedMembers(added=added)


@router.get(
    "/v1/groups/{group_id}/members",
    response_model=MemberPage,
    tags=["groups"],
    responses=_responses(401, 403, 404, 422, 503),
)
async def list_members(
    gateway: GatewayDep,
    claims: Auth,
    group_id: GroupId,
    cursor: PageCursor = "",
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
) -> MemberPage:
    """A page of members with their roles and cursors. Members only."""
    members, next_cursor = await gateway.group_ops.list_members(
        claims.user_id, group_id, cursor, limit
    )
    return MemberPage(members=[_member_out(m) for m in members], next_cursor=next_cursor)


@router.patch(
    "/v1/groups/{group_id}/members/{user_id}",
    response_model=MemberOut,
    tags=["groups"],
    responses=_responses(401, 403, 404, 409, 422, 503),
)
async def set_member_role(
    gateway: GatewayDep, claims: Auth, group_id: GroupId, user_id: MemberId, body: RoleRequest
) -> MemberOut:
    """Make a member an admin or a plain member again (owner only)."""
    return _member_out(
        await gateway.group_ops.set_role(claims.user_id, group_id, user_id, body.role)
    )


@router.delete(
    "/v1/groups/{group_id}/members/{user_id}",
    status_code=204,
    response_class=Response,
    tags=["groups"],
    responses=_responses(401, 403, 404, 409, 503),
)
async def remove_member(
    gateway: GatewayDep, claims: Auth, group_id: GroupId, user_id: MemberId
) -> Response:
    """Remove a member (owner or admin; only the owner removes admins). Removing
    oneself is leaving."""
    await gateway.group_ops.remove_member(claims.user_id, group_id, user_id)
    return Response(status_code=204)


@router.post(
    "/v1/groups/{group_id}/leave",
    status_code=204,
    response_class=Response,
    tags=["groups"],
    responses=_responses(401, 403, 404, 409, 503),
)
async def leave_group(gateway: GatewayDep, claims: Auth, group_id: GroupId) -> Response:
    """Leave the group (the owner cannot)."""
    await gateway.group_ops.leave_group(claims.user_id, group_id)
    return Response(status_code=204)


# -------------------------------------------------------------------- operations
@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """Liveness: the process serves HTTP."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyStatus,
    tags=["operations"],
    responses={503: {"model": ReadyStatus, "description": "Not ready"}},
)
async def readyz(gateway: GatewayDep) -> JSONResponse:
    """Readiness: user, group, message store and at least one connector reachable."""
    ok, checks = await gateway.readiness()
    body = ReadyStatus(status="ready" if ok else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


# On the API port only when configured so (create_app): else on an internal port.
metrics_router = APIRouter()


@metrics_router.get("/metrics", tags=["operations"], include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text exposition."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


# --------------------------------------------------------------------------- app
def create_app(gateway: Gateway, metrics_on_api: bool = True) -> FastAPI:
    app = FastAPI(
        title="IM gateway",
        version="1",
        description="Login, connector assignment, users, conversations, groups, history, "
        "sync and receipts. Errors are RFC 9457 problem details (`application/problem+json`) "
        "with a stable `code`.",
    )
    app.state.gateway = gateway
    app.state.metrics = metrics = Metrics()
    app.include_router(router)
    from services.gateway.api_sessions import router as sessions_router  # imports this module

    app.include_router(sessions_router)
    if metrics_on_api:
        app.include_router(metrics_router)
    _add_guards(app, gateway)
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    # Outermost (added last): every answer gets the headers, 500s and 413s included.
    app.add_middleware(
        SecurityHeadersMiddleware,
        docs_paths=[
            p for p in (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if p
        ],
        no_store_prefixes=["/v1/"],  # tokens and user data: never cached
        hsts=gateway.settings.public_tls(),
    )
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app


def _add_guards(app: FastAPI, gateway: Gateway) -> None:
    """The body limit runs inside the metrics (413s are counted) and before anything
    reads the body: routing, authentication, parsing."""
    limit = gateway.settings.max_request_body_bytes
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=limit,
        refuse=lambda: problem(
            413, "payload_too_large", f"the request body is larger than {limit} bytes"
        ),
    )
