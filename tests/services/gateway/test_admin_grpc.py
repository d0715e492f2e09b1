"""The gateway's AdminService (gRPC): the admin token in the metadata, and the same
operations and effects as the REST routes. The harness runs without internal TLS;
tests/services/test_admin_grpc_tls.py covers the mutual TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from argon2 import PasswordHasher

from im.events import ERASED
from im.v1 import admin_pb2, admin_pb2_grpc, wire_pb2
from tests.services.gateway.conftest import Suite
from tests.services.gateway.helpers import message

TOKEN = "admin-token-for-grpc-tests-0123456789abcdef"
METADATA = (("authorization", f"Bearer {TOKEN}"), ("x-admin-actor", "robot"))


@pytest.fixture
def settings_overrides() -> dict:
    return {"admin_token": TOKEN, "admin_grpc_port": 0, "admin_failures_per_address": 0}


@pytest.fixture
async def admin(suite: Suite) -> AsyncIterator[admin_pb2_grpc.AdminServiceStub]:
    async with grpc.aio.insecure_channel(suite.gateway.endpoints()["admin_grpc"]) as ch:
        yield admin_pb2_grpc.AdminServiceStub(ch)


async def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


async def test_calls_without_the_admin_token_are_refused(
    suite: Suite, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    _, user_headers = await suite.user("alice")
    request = admin_pb2.AdminUserRequest(user_id=1)
    assert await code_of(admin.ListSessions(request)) == grpc.StatusCode.UNAUTHENTICATED
    wrong = (("authorization", "Bearer " + "y" * 40),)
    assert await code_of(admin.ListSessions(request, metadata=wrong)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    as_user = (("authorization", user_headers["Authorization"]),)
    assert await code_of(admin.DisableUser(request, metadata=as_user)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )


async def test_operations_over_grpc(suite: Suite, admin: admin_pb2_grpc.AdminServiceStub) -> None:
    hashed = PasswordHasher(time_cost=1, memory_cost=8192).hash("grpc-import-1")
    imported = await admin.ImportUsers(
        admin_pb2.ImportUsersRequest(
            users=[
                admin_pb2.ImportUser(username="gina", password_hash=hashed),
                admin_pb2.ImportUser(username="gina"),
            ]
        ),
        metadata=METADATA,
    )
    assert [e.code for e in imported.errors] == ["duplicate_in_request"]
    gina = imported.imported[0].user_id
    await suite.login("gina", "phone", password="grpc-import-1")
    await suite.kv.connect(gina, "phone", "conn-a", ttl=60)

    listed = await admin.ListSessions(admin_pb2.AdminUserRequest(user_id=gina), metadata=METADATA)
    assert [(s.device_id, s.connector_id) for s in listed.sessions] == [("phone", "conn-a")]

    done = await admin.DisableUser(admin_pb2.AdminUserRequest(user_id=gina), metadata=METADATA)
    assert done.user.disabled and done.sessions_ended == 1
    assert (gina, "", wire_pb2.KICK_REASON_TOKEN_REVOKED) in {
        (k.user_id, k.device_id, k.reason) for k in suite.connector.kicks
    }
    done = await admin.EnableUser(admin_pb2.AdminUserRequest(user_id=gina), metadata=METADATA)
    assert not done.user.disabled

    reset = await admin.ResetPassword(
        admin_pb2.ResetPasswordRequest(user_id=gina), metadata=METADATA
    )
    assert reset.generated_password
    await suite.login("gina", "phone", password=reset.generated_password)

    conv = f"d:{gina}:{gina + 1000}"
    await suite.store.insert_many([message(conv, 1, gina, b"secret")])
    deleted = await admin.DeleteUser(
        admin_pb2.DeleteUserRequest(user_id=gina, erase_messages=True), metadata=METADATA
    )
    assert deleted.user.deleted and deleted.messages_erased == 1
    assert [(m.body, m.content_type) for m in await suite.store.history(conv, 0, 5)] == [
        (b"", ERASED)
    ]
    again = admin.EnableUser(admin_pb2.AdminUserRequest(user_id=gina), metadata=METADATA)
    assert await code_of(again) == grpc.StatusCode.FAILED_PRECONDITION
    missing = admin.DeleteUser(admin_pb2.DeleteUserRequest(user_id=999_999), metadata=METADATA)
    assert await code_of(missing) == grpc.StatusCode.NOT_FOUND
    bad = admin.DeleteUser(admin_pb2.DeleteUserRequest(user_id=0), metadata=METADATA)
    assert await code_of(bad) == grpc.StatusCode.INVALID_ARGUMENT
