"""MessageService.Send on the gateway's internal gRPC port: a named sender that must
exist and be a member, the socket's input limits, idempotent by client_msg_id, and the
health service beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from im.v1 import message_pb2, message_pb2_grpc
from tests.services.gateway.test_messages_api import ATTACHED, DeadBus, pair, published

if TYPE_CHECKING:
    from .conftest import Suite

Code = grpc.StatusCode


@pytest.fixture
async def stub(suite: Suite) -> AsyncIterator[message_pb2_grpc.MessageServiceStub]:
    # The test suite runs internal gRPC without certificates (no IM_INTERNAL_* files).
    async with grpc.aio.insecure_channel(suite.gateway.endpoints()["grpc"]) as channel:
        yield message_pb2_grpc.MessageServiceStub(channel)


async def refused(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_a_send_in_a_users_name(suite: Suite, stub) -> None:  # type: ignore[no-untyped-def]
    alice, _headers, _bob, cid = await pair(suite)
    request = message_pb2.ServerSendRequest(
        sender_id=alice, conversation_id=cid, client_msg_id="bot-1", body=b"from the bot"
    )
    sent = await stub.Send(request, timeout=10)
    assert sent.msg_id > 0 and sent.server_ts > 0 and sent.conversation_id == cid
    (message,) = published(suite)
    assert (message.msg_id, message.sender_id, message.sender_device) == (
        sent.msg_id,
        alice,
        "server",
    )
    assert message.content_type == "text/plain" and message.body == b"from the bot"
    again = await stub.Send(request, timeout=10)
    assert (again.msg_id, again.server_ts) == (sent.msg_id, sent.server_ts)
    named = await stub.Send(
        message_pb2.ServerSendRequest(
            sender_id=alice,
            conversation_id=cid,
            client_msg_id="bot-2",
            content_type="application/json",
            body=b"{}",
            sender_device="weather-bot",
        ),
        timeout=10,
    )
    assert named.msg_id != sent.msg_id
    assert published(suite)[-1].sender_device == "weather-bot"


async def test_the_sender_must_exist_and_be_a_member(suite: Suite, stub) -> None:  # type: ignore[no-untyped-def]
    _alice, _headers, _bob, cid = await pair(suite)
    carol = await suite.register("carol")

    def send(sender: int, conversation: str = cid) -> object:
        return stub.Send(
            message_pb2.ServerSendRequest(
                sender_id=sender, conversation_id=conversation, client_msg_id="x", body=b"x"
            ),
            timeout=10,
        )

    assert (await refused(send(carol)))[0] == Code.PERMISSION_DENIED
    assert (await refused(send(987654321)))[0] == Code.FAILED_PRECONDITION
    assert (await refused(send(0)))[0] == Code.INVALID_ARGUMENT
    assert (await refused(send(carol, "nope")))[0] == Code.NOT_FOUND
    assert published(suite) == []


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"client_msg_id": ""}, "client_msg_id"),
        ({"client_msg_id": "x" * 65}, "client_msg_id"),
        ({"client_msg_id": "~g:1:ev:2"}, "client_msg_id"),
        ({"content_type": "application/vnd.im.edit"}, "reserved"),
        ({"content_type": "c" * 65}, "content_type"),
        ({"body": b"x" * 32769}, "32768"),
        ({"attachment_ids": [*ATTACHED, "A" * 22]}, "at most 10"),
        ({"attachment_ids": ["x"]}, "malformed"),
        ({"attachment_ids": ATTACHED[:1] * 2}, "repeat"),
        ({"sender_device": "bad device"}, "sender_device"),
        ({"sender_device": "bot\n"}, "sender_device"),
    ],
)
async def test_input_limits(suite: Suite, stub, fields: dict, where: str) -> None:  # type: ignore[no-untyped-def]
    alice, _headers, _bob, cid = await pair(suite)
    request = message_pb2.ServerSendRequest(
        sender_id=alice, conversation_id=cid, client_msg_id="ok", body=b"x"
    )
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(request, name).extend(value)
        else:
            setattr(request, name, value)
    code, details = await refused(stub.Send(request, timeout=10))
    assert code == Code.INVALID_ARGUMENT and where in details
    assert published(suite) == []


async def test_a_bus_failure_is_unavailable(suite: Suite, stub) -> None:  # type: ignore[no-untyped-def]
    alice, _headers, _bob, cid = await pair(suite)
    working, suite.backends.bus = suite.backends.bus, DeadBus(partitions=1)
    request = message_pb2.ServerSendRequest(
        sender_id=alice, conversation_id=cid, client_msg_id="u", body=b"x"
    )
    try:
        assert (await refused(stub.Send(request, timeout=10)))[0] == Code.UNAVAILABLE
    finally:
        suite.backends.bus = working
    sent = await stub.Send(request, timeout=10)
    assert [m.msg_id for m in published(suite)] == [sent.msg_id]


async def test_the_health_service_answers_on_the_same_port(suite: Suite) -> None:
    async with grpc.aio.insecure_channel(suite.gateway.endpoints()["grpc"]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "im.v1.MessageService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
