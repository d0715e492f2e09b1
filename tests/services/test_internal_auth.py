"""Internal gRPC of a running suite answers only the suite: the calls an outsider used
to forge deliveries, join groups and list users are refused without the suite's
certificate, and served with it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from im.grpcutil import GrpcSecurity, channel
from im.tls import ensure_internal
from im.v1 import (
    connector_pb2,
    connector_pb2_grpc,
    group_pb2,
    group_pb2_grpc,
    message_pb2,
    message_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
    wire_pb2,
)
from tests.services.conftest import SecureSuite

Call = Callable[[grpc.aio.Channel], Awaitable[Any]]


async def forge_delivery(ch: grpc.aio.Channel) -> Any:
    message = wire_pb2.Message(conversation_id="d:1:2", sender_id=1, body=b"forged")
    delivery = connector_pb2.Delivery(
        message=message, targets=[connector_pb2.DeviceRef(user_id=2, device_id="phone")]
    )
    request = connector_pb2.DeliverRequest(deliveries=[delivery])
    return await connector_pb2_grpc.ConnectorServiceStub(ch).Deliver(request, timeout=5)


async def join_group(ch: grpc.aio.Channel) -> Any:
    groups = group_pb2_grpc.GroupServiceStub(ch)
    created = await groups.CreateGroup(
        group_pb2.CreateGroupRequest(owner_id=1, name="team"), timeout=5
    )
    request = group_pb2.AddMembersRequest(
        conversation_id=created.conversation.conversation_id, actor_id=1, user_ids=[666]
    )
    return await groups.AddMembers(request, timeout=5)


async def list_users(ch: grpc.aio.Channel) -> Any:
    request = user_pb2.GetUsersRequest(user_ids=[1, 2, 3])
    return await user_pb2_grpc.UserServiceStub(ch).GetUsers(request, timeout=5)


async def forge_message(ch: grpc.aio.Channel) -> Any:
    request = message_pb2.ServerSendRequest(
        sender_id=1, conversation_id="d:1:2", client_msg_id="forged", body=b"forged"
    )
    try:
        return await message_pb2_grpc.MessageServiceStub(ch).Send(request, timeout=5)
    except grpc.aio.AioRpcError as exc:
        # Past the certificate check: this fresh suite has no user 1.
        if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        return None


async def router_health(ch: grpc.aio.Channel) -> Any:
    return await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)


ATTACKS: dict[str, tuple[str, Call]] = {
    "connector Deliver": ("connector", forge_delivery),
    "group CreateGroup + AddMembers": ("group", join_group),
    "user GetUsers": ("user", list_users),
    "router health": ("router", router_health),
    "gateway MessageService.Send": ("gateway", forge_message),
}


async def status(call: Call, ch: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await call(ch)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_without_the_suite_certificate_every_service_refuses(
    secure_suite: SecureSuite, attack: str, tmp_path: Path
) -> None:
    service, call = ATTACKS[attack]
    addr = secure_suite.grpc_addr(service)
    async with grpc.aio.insecure_channel(addr) as ch:
        assert await status(call, ch) == grpc.StatusCode.UNAVAILABLE
    # A certificate of another CA, named like ours, trusting the real server.
    other = ensure_internal(tmp_path / "stranger", secure_suite.security.server_name)
    stranger = GrpcSecurity(
        secure_suite.security.root_certificates,
        other.cert.read_bytes(),
        other.key.read_bytes(),
        secure_suite.security.server_name,
    )
    async with channel(addr, stranger) as ch:
        assert await status(call, ch) == grpc.StatusCode.UNAVAILABLE
    async with channel(addr, secure_suite.security) as ch:
        assert await status(call, ch) == grpc.StatusCode.OK


async def test_nothing_an_outsider_sent_arrived(secure_suite: SecureSuite) -> None:
    async with grpc.aio.insecure_channel(secure_suite.grpc_addr("group")) as ch:
        assert await status(join_group, ch) == grpc.StatusCode.UNAVAILABLE
    async with channel(secure_suite.grpc_addr("group"), secure_suite.security) as ch:
        reply = await group_pb2_grpc.GroupServiceStub(ch).ListUserConversations(
            group_pb2.ListUserConversationsRequest(user_id=1), timeout=5
        )
    assert not reply.conversations


async def test_reflection_is_off_by_default(secure_suite: SecureSuite) -> None:
    assert secure_suite.settings.grpc_reflection is False
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async with channel(secure_suite.grpc_addr("user"), secure_suite.security) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.ServerReflectionInfo(iter([request]), timeout=5):
                pass
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_internal_listeners_are_not_the_public_ones(secure_suite: SecureSuite) -> None:
    settings = secure_suite.settings
    assert settings.internal_host == "127.0.0.1"
    for service in ("user", "group", "connector", "router", "gateway"):
        assert secure_suite.grpc_addr(service).startswith(f"{settings.internal_host}:")
