"""The gateway's AdminService takes two keys: the suite's mutual TLS (a certificate of
its internal CA) and the admin token; either alone is refused."""

from __future__ import annotations

from pathlib import Path

import grpc

from im.grpcutil import GrpcSecurity, channel
from im.tls import ensure_internal
from im.v1 import admin_pb2, admin_pb2_grpc
from tests.services.conftest import ADMIN_TOKEN, SecureSuite

IMPORT = admin_pb2.ImportUsersRequest(users=[admin_pb2.ImportUser(username="viatls")])


async def import_status(ch: grpc.aio.Channel, token: str | None) -> grpc.StatusCode:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        await admin_pb2_grpc.AdminServiceStub(ch).ImportUsers(IMPORT, metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_admin_grpc_needs_the_suite_certificate_and_the_token(
    secure_suite: SecureSuite, tmp_path: Path
) -> None:
    addr = secure_suite.grpc_addr("admin")
    assert addr.startswith(f"{secure_suite.settings.internal_host}:")
    async with grpc.aio.insecure_channel(addr) as ch:
        assert await import_status(ch, ADMIN_TOKEN) == grpc.StatusCode.UNAVAILABLE
    other = ensure_internal(tmp_path / "stranger", secure_suite.security.server_name)
    stranger = GrpcSecurity(
        secure_suite.security.root_certificates,
        other.cert.read_bytes(),
        other.key.read_bytes(),
        secure_suite.security.server_name,
    )
    async with channel(addr, stranger) as ch:
        assert await import_status(ch, ADMIN_TOKEN) == grpc.StatusCode.UNAVAILABLE
    async with channel(addr, secure_suite.security) as ch:
        # A service's certificate alone makes no operator.
        assert await import_status(ch, None) == grpc.StatusCode.UNAUTHENTICATED
        assert await import_status(ch, "x" * 40) == grpc.StatusCode.UNAUTHENTICATED
        assert await import_status(ch, ADMIN_TOKEN) == grpc.StatusCode.OK
