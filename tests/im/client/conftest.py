"""Real-socket fakes for the client tests: a connector (TCP + WebSocket) and a gateway.

``FakeIm`` is a tiny in-memory IM: users, 1:1 conversations with gap-free seqs, a
connector that answers Auth/Send/Ping and delivers to online devices, and a FastAPI
gateway (served by uvicorn on an ephemeral port) with login, sync, history and ack.
Knobs let a test drop Sends, answer them with an Error, or push arbitrary frames.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from websockets.asyncio.server import ServerConnection, serve

from im.ids import parse_direct
from im.protocol import FrameDecoder, encode_frame, parse_frame
from im.v1 import wire_pb2


@dataclass
class FakeSession:
    user_id: int
    device_id: str
    transport: str
    send: Callable[[wire_pb2.Frame], Awaitable[None]]
    close: Callable[[], Awaitable[None]]
    frames: list[wire_pb2.Frame] = field(default_factory=list)  # all after Auth

    def of_kind(self, kind: str) -> list[wire_pb2.Frame]:
        return [f for f in self.frames if f.WhichOneof("kind") == kind]


def _problem(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {
            "type": f"https://im.example/problems/{code}",
            "title": code.replace("_", " "),
            "status": status,
            "detail": detail,
            "code": code,
        },
        status_code=status,
        media_type="application/problem+json",
    )


def _message_json(m: wire_pb2.Message) -> dict[str, Any]:
    return {
        "msg_id": str(m.msg_id),
        "conversation_id": m.conversation_id,
        "seq": m.seq,
        "sender_id": m.sender_id,
        "sender_device": m.sender_device,
        "client_msg_id": m.client_msg_id,
        "content_type": m.content_type,
        "body_b64": base64.b64encode(m.body).decode(),
        "text": m.body.decode() if m.content_type.startswith("text/") else None,
        "server_ts": m.server_ts,
    }


class FakeIm:
    def __init__(self) -> None:
        self.users: dict[str, tuple[int, str]] = {}  # username -> (id, password)
        self.messages: dict[str, list[wire_pb2.Message]] = {}
        self.delivered: dict[tuple[int, str], int] = {}  # REST/wire acks, per user
        self.rest_acks: list[tuple[int, str, int]] = []
        self.sessions: list[FakeSession] = []
        self.send_acks: dict[tuple[int, str], wire_pb2.SendAck] = {}
        self.heartbeat_ms = 20_000
        self.drop_sends = 0  # swallow this many Send frames (no answer)
        self.send_error: int | None = None  # answer every Send with this Error code
        self.busy_sends = 0  # refuse this many Sends as BUSY, retry after busy_retry_ms
        self.busy_retry_ms = 250
        self.deliver_on_send = True
        self.answer_pings = True
        self.on_auth: Callable[[FakeSession], Awaitable[None]] | None = None
        self.page_limit_seen: list[int] = []
        self.logins = 0  # successful logins
        self.login_problem: tuple[int, str] | None = None  # answer logins with it
        self._next_msg_id = 1_000_000_000_000
        self.tcp_address = ""
        self.ws_address = ""
        self.gateway_url = ""
        self._changed = asyncio.Event()

    # --------------------------------------------------------------- state

    def add_user(self, username: str, password: str = "pw") -> int:
        uid = len(self.users) + 1
        self.users[username] = (uid, password)
        return uid

    def store(
        self, conversation_id: str, sender_id: int, text: str, client_msg_id: str = ""
    ) -> wire_pb2.Message:
        msgs = self.messages.setdefault(conversation_id, [])
        self._next_msg_id += 1
        msg = wire_pb2.Message(
            msg_id=self._next_msg_id,
            conversation_id=conversation_id,
            seq=len(msgs) + 1,
            sender_id=sender_id,
            sender_device="dev",
            client_msg_id=client_msg_id,
            content_type="text/plain",
            body=text.encode(),
            server_ts=1_800_000_000_000 + len(msgs),
        )
        msgs.append(msg)
        return msg

    def members(self, conversation_id: str) -> tuple[int, ...]:
        pair = parse_direct(conversation_id)
        return pair or ()

    def _token_user(self, token: str) -> tuple[int, str] | None:
        # tokens are "tok:<user_id>:<device_id>"
        parts = token.split(":", 2)
        if len(parts) != 3 or parts[0] != "tok" or not parts[1].isdigit():
            return None
        return int(parts[1]), parts[2]

    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await changed.wait()

    def session(self, user_id: int | None = None) -> FakeSession:
        found = [s for s in self.sessions if user_id is None or s.user_id == user_id]
        assert found, "no such session"
        return found[-1]

    async def deliver(self, message: wire_pb2.Message, user_id: int | None = None) -> None:
        """Push a Deliver to the online sessions of the members (or one user)."""
        targets = (user_id,) if user_id is not None else self.members(message.conversation_id)
        for s in list(self.sessions):
            if s.user_id in targets:
                await s.send(wire_pb2.Frame(deliver=wire_pb2.Deliver(message=message)))

    # ----------------------------------------------------------- connector

    async def _serve(
        self,
        transport: str,
        recv: Callable[[], Awaitable[list[wire_pb2.Frame]]],
        send: Callable[[wire_pb2.Frame], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        first = await recv()
        auth = first[0]
        if auth.WhichOneof("kind") != "auth":
            await send(wire_pb2.Frame(error=wire_pb2.Error(code=wire_pb2.ERROR_CODE_AUTH_REQUIRED)))
            return
        who = self._token_user(auth.auth.token)
        if who is None:
            await send(
                wire_pb2.Frame(
                    request_id=auth.request_id,
                    error=wire_pb2.Error(code=wire_pb2.ERROR_CODE_AUTH_FAILED, message="bad token"),
                )
            )
            return
        session = FakeSession(who[0], who[1], transport, send, close)
        self.sessions.append(session)
        await send(
            wire_pb2.Frame(
                request_id=auth.request_id,
                auth_ok=wire_pb2.AuthOk(
                    user_id=who[0],
                    device_id=who[1],
                    connector_id="fake-1",
                    heartbeat_interval_ms=self.heartbeat_ms,
                    server_ts=1,
                ),
            )
        )
        self._touch()
        if self.on_auth is not None:
            await self.on_auth(session)
        try:
            while True:
                for frame in await recv():
                    session.frames.append(frame)
                    await self._on_frame(session, frame)
                    self._touch()
        finally:
            if session in self.sessions:
                self.sessions.remove(session)
            self._touch()

    async def _on_frame(self, s: FakeSession, frame: wire_pb2.Frame) -> None:
        kind = frame.WhichOneof("kind")
        if kind == "ping" and self.answer_pings:
            await s.send(wire_pb2.Frame(request_id=frame.request_id, pong=wire_pb2.Pong()))
        elif kind == "deliver_ack":
            key = (s.user_id, frame.deliver_ack.conversation_id)
            self.delivered[key] = max(self.delivered.get(key, 0), frame.deliver_ack.seq)
        elif kind == "send":
            await self._on_send(s, frame)

    async def _on_send(self, s: FakeSession, frame: wire_pb2.Frame) -> None:
        send = frame.send
        if self.drop_sends > 0:
            self.drop_sends -= 1
            return
        if self.busy_sends > 0:
            self.busy_sends -= 1
            busy = wire_pb2.Error(
                code=wire_pb2.ERROR_CODE_BUSY,
                message="overloaded",
                client_msg_id=send.client_msg_id,
                retry_after_ms=self.busy_retry_ms,
            )
            await s.send(wire_pb2.Frame(request_id=frame.request_id, error=busy))
            return
        if self.send_error is not None:
            await s.send(
                wire_pb2.Frame(
                    request_id=frame.request_id,
                    error=wire_pb2.Error(
                        code=self.send_error, message="nope", client_msg_id=send.client_msg_id
                    ),
                )
            )
            return
        key = (s.user_id, send.client_msg_id)
        ack = self.send_acks.get(key)
        if ack is None:  # idempotent: a repeat gets the same SendAck, stored once
            msg = self.store(send.conversation_id, s.user_id, "", send.client_msg_id)
            msg.body = send.body
            msg.content_type = send.content_type
            msg.sender_device = s.device_id
            ack = wire_pb2.SendAck(
                client_msg_id=send.client_msg_id,
                msg_id=msg.msg_id,
                server_ts=msg.server_ts,
                conversation_id=send.conversation_id,
            )
            self.send_acks[key] = ack
            if self.deliver_on_send:
                await self.deliver(msg)
        await s.send(wire_pb2.Frame(request_id=frame.request_id, send_ack=ack))

    async def _tcp_handler(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        decoder = FrameDecoder()

        async def recv() -> list[wire_pb2.Frame]:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("eof")
                frames = decoder.feed(data)
                if frames:
                    return frames

        async def send(frame: wire_pb2.Frame) -> None:
            writer.write(encode_frame(frame))
            await writer.drain()

        async def close() -> None:
            writer.close()

        with contextlib.suppress(ConnectionError, OSError):
            await self._serve("tcp", recv, send, close)
        writer.close()

    async def _ws_handler(self, ws: ServerConnection) -> None:
        async def recv() -> list[wire_pb2.Frame]:
            data = await ws.recv()
            assert isinstance(data, bytes)
            return [parse_frame(data)]

        async def send(frame: wire_pb2.Frame) -> None:
            await ws.send(frame.SerializeToString())

        async def close() -> None:
            await ws.close()

        with contextlib.suppress(Exception):
            await self._serve("ws", recv, send, close)

    # ------------------------------------------------------------- gateway

    def app(self) -> FastAPI:
        app = FastAPI()

        def auth(request: Request) -> int | None:
            header = request.headers.get("authorization", "")
            who = self._token_user(header.removeprefix("Bearer "))
            return who[0] if who else None

        def user_json(name: str) -> dict[str, Any]:
            uid = self.users[name][0]
            return {"user_id": uid, "username": name, "display_name": name, "created_at": 0}

        @app.post("/v1/auth/register", status_code=201)
        async def register(body: dict[str, Any]) -> Any:
            if body["username"] in self.users:
                return _problem(409, "username_taken", "taken")
            self.add_user(body["username"], body["password"])
            return user_json(body["username"])

        @app.post("/v1/auth/login")
        async def login(body: dict[str, Any]) -> Any:
            if self.login_problem is not None:
                return _problem(*self.login_problem, "login refused by the test")
            entry = self.users.get(body["username"])
            if entry is None or entry[1] != body["password"]:
                return _problem(401, "invalid_credentials", "wrong username or password")
            self.logins += 1
            self._touch()
            return {
                "access_token": f"tok:{entry[0]}:{body['device_id']}",
                "token_type": "Bearer",
                "expires_in": 3600,
                "user_id": entry[0],
                "device_id": body["device_id"],
                "connector": {"id": "fake-1", "tcp": self.tcp_address, "ws": self.ws_address},
                "heartbeat_interval": self.heartbeat_ms / 1000,
            }

        @app.post("/v1/auth/logout", status_code=204)
        async def logout(request: Request) -> Response:
            if auth(request) is None:
                return _problem(401, "unauthorized", "no token")
            return Response(status_code=204)

        @app.get("/v1/users/me")
        async def me(request: Request) -> Any:
            uid = auth(request)
            if uid is None:
                return _problem(401, "unauthorized", "no token")
            return next(user_json(n) for n, (i, _) in self.users.items() if i == uid)

        @app.get("/v1/users/{user_id}")
        async def user(user_id: int, request: Request) -> Any:
            for name, (uid, _) in self.users.items():
                if uid == user_id:
                    return user_json(name)
            return _problem(404, "not_found", "no such user")

        @app.get("/v1/users")
        async def users(username: str, request: Request) -> Any:
            return {"users": [user_json(username)] if username in self.users else []}

        @app.get("/v1/sync")
        async def sync(request: Request) -> Any:
            uid = auth(request)
            if uid is None:
                return _problem(401, "unauthorized", "no token")
            convs = []
            for cid, msgs in self.messages.items():
                if uid in self.members(cid):
                    delivered = self.delivered.get((uid, cid), 0)
                    convs.append(
                        {
                            "conversation_id": cid,
                            "kind": "direct",
                            "name": "",
                            "peer_id": next(m for m in self.members(cid) if m != uid),
                            "last_seq": len(msgs),
                            "delivered_seq": delivered,
                            "read_seq": 0,
                            "unread": len(msgs),
                        }
                    )
            return {"conversations": convs}

        @app.get("/v1/conversations/{cid}/messages")
        async def history(cid: str, request: Request, after_seq: int = 0, limit: int = 100) -> Any:
            uid = auth(request)
            if uid is None or uid not in self.members(cid):
                return _problem(403, "forbidden", "not a member")
            self.page_limit_seen.append(limit)
            msgs = [m for m in self.messages.get(cid, []) if m.seq > after_seq]
            page = msgs[:limit]
            return {"messages": [_message_json(m) for m in page], "has_more": len(msgs) > limit}

        @app.post("/v1/conversations/{cid}/ack", status_code=204)
        async def ack(cid: str, body: dict[str, Any], request: Request) -> Response:
            uid = auth(request)
            assert uid is not None
            self.rest_acks.append((uid, cid, body["seq"]))
            key = (uid, cid)
            self.delivered[key] = max(self.delivered.get(key, 0), body["seq"])
            return Response(status_code=204)

        return app


@contextlib.asynccontextmanager
async def running(with_gateway: bool) -> AsyncIterator[FakeIm]:
    im = FakeIm()
    tcp = await asyncio.start_server(im._tcp_handler, "127.0.0.1", 0)
    ws = await serve(im._ws_handler, "127.0.0.1", 0, compression=None)
    im.tcp_address = f"127.0.0.1:{tcp.sockets[0].getsockname()[1]}"
    im.ws_address = f"ws://127.0.0.1:{next(iter(ws.sockets)).getsockname()[1]}/ws"
    server: uvicorn.Server | None = None
    task: asyncio.Task[None] | None = None
    sock = socket.socket()
    if with_gateway:
        sock.bind(("127.0.0.1", 0))
        im.gateway_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(im.app(), log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 - uvicorn offers only this flag
            await asyncio.sleep(0.01)
    try:
        yield im
    finally:
        for s in list(im.sessions):
            with contextlib.suppress(Exception):
                await s.close()
        if server is not None and task is not None:
            server.should_exit = True
            await task
        tcp.close()
        ws.close()
        with contextlib.suppress(Exception):
            await ws.wait_closed()
        sock.close()


@pytest.fixture
async def fake_connector() -> AsyncIterator[FakeIm]:
    """The connector half only (no HTTP server)."""
    async with running(with_gateway=False) as im:
        yield im


@pytest.fixture
async def fake_im() -> AsyncIterator[FakeIm]:
    """Connector and gateway."""
    async with running(with_gateway=True) as im:
        yield im
