"""The im.v1.json WebSocket subprotocol over real sockets: the same frames, session
and errors as binary protobuf, as text messages in the canonical JSON mapping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from im.adapters.memory import MemoryBus, MemoryKV, MemoryRegistry
from im.auth import TokenIssuer
from im.clock import FakeClock
from im.config import Settings
from im.ports import Backends
from im.protocol import JSON_SUBPROTOCOL
from im.v1 import connector_pb2, wire_pb2
from services.connector.service import ConnectorCore
from services.connector.transport import start_ws
from tests.services.connector.helpers import AllowList

MAX_FRAME = 2048


@dataclass
class Server:
    core: ConnectorCore
    issuer: TokenIssuer
    port: int

    def token(self, user: int, device: str) -> str:
        return self.issuer.issue(user, device)[0]


@pytest.fixture
async def server(keys, tmp_path) -> AsyncIterator[Server]:
    settings = Settings(data_dir=tmp_path, max_frame_bytes=MAX_FRAME, max_body_bytes=1024)
    kv = MemoryKV(FakeClock())
    backends = Backends(MemoryBus(2), MemoryRegistry(), kv, kv, kv, kv)
    core = ConnectorCore(
        settings,
        backends,
        keys[1],
        clock=FakeClock(),
        authorizer=AllowList({(1, "d:1:2"), (2, "d:1:2")}),
    )
    ws = await start_ws(core, "127.0.0.1", 0)
    try:
        yield Server(core, keys[0], ws.sockets[0].getsockname()[1])
    finally:
        core.drain()
        ws.close()
        await ws.wait_closed()


async def ws_open(server: Server, *subprotocols: str) -> ClientConnection:
    return await connect(
        f"ws://127.0.0.1:{server.port}/ws",
        subprotocols=list(subprotocols) or None,  # type: ignore[arg-type]
        ping_interval=None,
    )


async def recv_json(ws: ClientConnection) -> dict:
    async with asyncio.timeout(5):
        text = await ws.recv()
    assert isinstance(text, str), "a JSON connection answers with text messages"
    return json.loads(text)


async def json_client(server: Server, user: int, device: str) -> ClientConnection:
    ws = await ws_open(server, JSON_SUBPROTOCOL)
    assert ws.subprotocol == JSON_SUBPROTOCOL
    await ws.send(json.dumps({"requestId": 1, "auth": {"token": server.token(user, device)}}))
    answer = await recv_json(ws)
    assert answer["requestId"] == 1
    assert answer["authOk"]["userId"] == str(user)  # int64 fields are strings
    assert answer["authOk"]["deviceId"] == device
    return ws


async def closing_error(ws: ClientConnection) -> str:
    """The code of the Error frame that ends the connection, then the close."""
    error = (await recv_json(ws))["error"]
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(5):
            await ws.recv()
    return error["code"]


async def test_a_json_session_pings_sends_and_receives(server: Server):
    ws = await json_client(server, 1, "web")
    await ws.send('{"request_id": 7, "ping": {}}')  # proto field names are accepted too
    pong = await recv_json(ws)
    assert pong["requestId"] == 7 and int(pong["pong"]["serverTs"]) > 0

    send = {
        "requestId": 8,
        "send": {
            "clientMsgId": "c-1",
            "conversationId": "d:1:2",
            "contentType": "text/plain",
            "body": "aGVsbG8=",  # "hello"
        },
    }
    await ws.send(json.dumps(send))
    ack = await recv_json(ws)
    assert ack["requestId"] == 8
    assert ack["sendAck"]["clientMsgId"] == "c-1"
    assert ack["sendAck"]["msgId"].isdigit()  # fixed64: a string, too big for a JS number
    await ws.close()


async def test_a_message_reaches_json_and_binary_sockets_alike(server: Server):
    web = await json_client(server, 2, "web")
    app = await ws_open(server)
    assert app.subprotocol is None
    await app.send(
        wire_pb2.Frame(auth=wire_pb2.Auth(token=server.token(2, "app"))).SerializeToString()
    )
    assert wire_pb2.Frame.FromString(await app.recv()).WhichOneof("kind") == "auth_ok"

    message = wire_pb2.Message(
        msg_id=2**63 + 5, conversation_id="d:1:2", seq=3, sender_id=1, body="héllo".encode()
    )
    targets = [connector_pb2.DeviceRef(user_id=2, device_id=d) for d in ("web", "app")]
    server.core.deliver(
        connector_pb2.DeliverRequest(
            deliveries=[connector_pb2.Delivery(message=message, targets=targets)]
        )
    )
    got = (await recv_json(web))["deliver"]["message"]
    assert got["msgId"] == str(2**63 + 5)
    assert got["seq"] == "3" and got["senderId"] == "1"
    assert got["body"] == "aMOpbGxv"  # bytes: base64
    binary = wire_pb2.Frame.FromString(await app.recv())
    assert binary.deliver.message == message

    # A cumulative ack in JSON stops the resends like a binary one.
    await web.send(json.dumps({"deliverAck": {"conversationId": "d:1:2", "seq": "3"}}))
    await asyncio.sleep(0.05)
    conn = server.core.by_device[(2, "web")]
    assert not conn.pending.get("d:1:2")
    await web.close()
    await app.close()


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "[]",
        '{"ping": {}, "pong": {}}',
        '{"ping": {}, "surprise": 1}',
        "[" * (MAX_FRAME * 3),  # past the JSON parser's recursion limit
        b"\x22\x00",  # binary on a JSON connection
    ],
    ids=["garbage", "no-kind", "two-kinds", "unknown-field", "deep-nesting", "binary"],
)
async def test_a_frame_that_is_not_json_of_a_frame_is_bad_and_closes(server: Server, message):
    ws = await json_client(server, 1, "web")
    await ws.send(message)
    assert await closing_error(ws) == "ERROR_CODE_BAD_FRAME"


async def test_text_on_a_binary_connection_is_still_a_bad_frame(server: Server):
    ws = await ws_open(server)
    await ws.send('{"ping": {}}')
    error = wire_pb2.Frame.FromString(await ws.recv()).error
    assert error.code == wire_pb2.ERROR_CODE_BAD_FRAME


async def test_the_size_limit_is_on_the_decoded_frame(server: Server):
    ws = await json_client(server, 1, "web")
    # Longer than the limit as text, small once decoded: accepted.
    await ws.send('{"requestId": 2, "ping": {}}' + " " * (MAX_FRAME * 2))
    assert "pong" in await recv_json(ws)
    # A body of MAX_FRAME bytes makes a frame over the limit, however it is written.
    body = "A" * (MAX_FRAME * 4 // 3 + 4)
    await ws.send(
        json.dumps({"send": {"clientMsgId": "c", "conversationId": "d:1:2", "body": body}})
    )
    assert await closing_error(ws) == "ERROR_CODE_FRAME_TOO_LARGE"


async def test_a_client_offering_only_other_subprotocols_gets_none(server: Server):
    ws = await ws_open(server, "mqtt")
    # The server goes on without one; a browser would then fail the handshake itself.
    assert ws.subprotocol is None
    await ws.close()
