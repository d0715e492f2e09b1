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
from im.v1 import user_pb2, wire_pb2
from services.gateway.service import ApiError, ConversationView, Gateway, unauthorized

log = logging.getLogger("im.gateway")

PROBLEM_BASE = "https://im.example/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"

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
        "unavailable, internal."
    )


class RegisterRequest(BaseModel):
    username: str = Field(
        min_length=1, max_length=64, description="Unique login name.", examples=["alice"]
    )
    password: str = Field(
        min_length=1, max_length=1024, description="Password (hashed with argon2id)."
    )
    display_name: str = Field(
        "", max_length=128, description="Name shown to others (optional).", examples=["Alice"]
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
    ws: str = Field(description="WebSocket URL, `ws://host:port/ws`.")


class LoginResponse(BaseModel):
    access_token: str = Field(description="JWT (EdDSA); send it as `Bearer` and in `Auth`.")
    token_type: Literal["Bearer"] = Field("Bearer", description="Always `Bearer`.")
    expires_in: int = Field(description="Seconds until the token expires.")
    user_id: int = Field(description="The logged-in user.")
    device_id: str = Field(description="The device id the token is bound to.")
    connector: ConnectorAddress = Field(description="Where to open the real-time socket.")
    heartbeat_interval: float = Field(description="Seconds between client pings.")


class UserOut(BaseModel):
    user_id: int = Field(description="Numeric user id.")
    username: str = Field(description="Login name.")
    display_name: str = Field(description="Name shown to others.")
    created_at: int = Field(description="Registration time, milliseconds since the epoch.")


class UserList(BaseModel):
    users: list[UserOut] = Field(description="Matching users (0 or 1 for a username).")


class DirectRequest(BaseModel):
    peer_id: int = Field(gt=0, description="The other user of the 1:1 conversation.")


class ConversationOut(BaseModel):
    conversation_id: str = Field(description='`"d:<low>:<high>"` (direct) or `"g:<id>"`.')
    kind: Literal["direct", "group"] = Field(description="Conversation kind.")
    name: str = Field(description="Group name; empty for direct conversations.")
    peer_id: int | None = Field(description="The other user (direct only, else null).")
    last_seq: int = Field(description="Seq of the newest stored message (0: none).")
    delivered_seq: int = Field(description="This user's delivered cursor.")
    read_seq: int = Field(description="This user's read cursor.")
    unread: int = Field(description="Messages after the read cursor: last_seq - read_seq.")


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
    seq: int = Field(ge=0, description="Cumulative: everything up to this seq.")


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


# ------------------------------------------------------------------- problems
def problem(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "type": PROBLEM_BASE + code,
        "title": _TITLES.get(code, code.replace("_", " ").capitalize()),
        "status": status,
        "detail": detail,
        "code": code,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return problem(exc.status, exc.code, exc.detail, exc.headers)


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

router = APIRouter()


# -------------------------------------------------------------------------- auth
@router.post(
    "/v1/auth/register",
    status_code=201,
    response_model=RegisteredUser,
    tags=["auth"],
    responses=_responses(409, 422, 503),
)
async def register(gateway: GatewayDep, body: RegisterRequest) -> RegisteredUser:
    """Create a user."""
    u = await gateway.register(body.username, body.password, body.display_name)
    return RegisteredUser(user_id=u.user_id, username=u.username, display_name=u.display_name)


@router.post(
    "/v1/auth/login",
    response_model=LoginResponse,
    tags=["auth"],
    responses=_responses(401, 422, 429, 503),
)
async def login(gateway: GatewayDep, body: LoginRequest) -> LoginResponse:
    """Check the password, issue an access token and assign a connector."""
    r = await gateway.login(body.username, body.password, body.device_id)
    info = r.connector
    return LoginResponse(
        access_token=r.access_token,
        expires_in=r.expires_in,
        user_id=r.user_id,
        device_id=r.device_id,
        connector=ConnectorAddress(
            id=info.connector_id,
            tcp=f"{info.host}:{info.tcp_port}",
            ws=f"ws://{info.host}:{info.ws_port}/ws",
        ),
        heartbeat_interval=r.heartbeat_interval,
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
async def user_by_id(
    gateway: GatewayDep, _auth: Auth, user_id: Annotated[int, Path(description="User id.")]
) -> UserOut:
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
    return _conversation(await gateway.open_direct(claims.user_id, body.peer_id))


async def _conversation_list(gateway: Gateway, claims: Claims) -> ConversationList:
    views = await gateway.conversations(claims.user_id)
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
    after_seq: Annotated[int, Query(ge=0, description="Return messages after this seq.")] = 0,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
) -> MessagePage:
    """Messages with seq > after_seq, ascending; 403 for a non-member."""
    messages, has_more = await gateway.history(claims.user_id, conversation_id, after_seq, limit)
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
    await gateway.update_cursor(claims.user_id, conversation_id, body.seq, read=False)
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
    await gateway.update_cursor(claims.user_id, conversation_id, body.seq, read=True)
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


@router.get("/metrics", tags=["operations"], include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text exposition."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


# --------------------------------------------------------------------------- app
def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(
        title="IM gateway",
        version="1",
        description="Login, connector assignment, users, conversations, history, sync "
        "and receipts. Errors are RFC 9457 problem details (`application/problem+json`) "
        "with a stable `code`.",
    )
    app.state.gateway = gateway
    app.state.metrics = metrics = Metrics()
    app.include_router(router)
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app
