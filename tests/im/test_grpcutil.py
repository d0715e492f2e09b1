"""Internal gRPC servers: mutual TLS with the suite's CA refuses every other caller,
health stays reachable for probes on its own plaintext port, reflection is opt-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from im.config import Settings
from im.grpcutil import (
    LIVENESS,
    GrpcSecurity,
    GrpcServer,
    InsecureInternalError,
    channel,
    grpc_security,
    require_internal_security,
    service_name,
)
from im.tls import CertFiles, ensure_internal
from im.v1 import connector_pb2, connector_pb2_grpc

SERVER_NAME = "im-internal"
CONNECTOR_SERVICE = service_name(connector_pb2, "ConnectorService")


class RecordingConnector(connector_pb2_grpc.ConnectorServiceServicer):
    def __init__(self) -> None:
        self.delivered: list[connector_pb2.DeliverRequest] = []

    async def Deliver(
        self, request: connector_pb2.DeliverRequest, context: grpc.aio.ServicerContext
    ) -> connector_pb2.DeliverResponse:
        self.delivered.append(request)
        return connector_pb2.DeliverResponse()


@dataclass
class Running:
    server: GrpcServer
    servicer: RecordingConnector
    security: GrpcSecurity
    files: CertFiles

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def security_of(files: CertFiles) -> GrpcSecurity:
    return GrpcSecurity.load(str(files.ca), str(files.cert), str(files.key), SERVER_NAME)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    files = ensure_internal(tmp_path / "suite", SERVER_NAME)
    security = security_of(files)
    servicer = RecordingConnector()
    server = GrpcServer("127.0.0.1", 0, security=security, health_port=0)
    server.add(
        connector_pb2_grpc.add_ConnectorServiceServicer_to_server, servicer, CONNECTOR_SERVICE
    )
    await server.start()
    yield Running(server, servicer, security, files)
    await server.stop(0)


async def deliver(ch: grpc.aio.Channel) -> grpc.StatusCode:
    stub = connector_pb2_grpc.ConnectorServiceStub(ch)
    try:
        await stub.Deliver(connector_pb2.DeliverRequest(), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_a_suite_client_with_the_certificate_is_served(running: Running) -> None:
    async with channel(running.addr, running.security) as ch:
        assert await deliver(ch) == grpc.StatusCode.OK
    assert len(running.servicer.delivered) == 1


async def test_a_plaintext_client_is_refused(running: Running) -> None:
    async with grpc.aio.insecure_channel(running.addr) as ch:
        assert await deliver(ch) == grpc.StatusCode.UNAVAILABLE
    assert running.servicer.delivered == []


async def test_a_tls_client_without_a_certificate_is_refused(running: Running) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=running.files.ca.read_bytes())
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    async with grpc.aio.secure_channel(running.addr, credentials, options=options) as ch:
        assert await deliver(ch) == grpc.StatusCode.UNAVAILABLE
    assert running.servicer.delivered == []


async def test_a_certificate_from_another_ca_is_refused(running: Running, tmp_path: Path) -> None:
    other = ensure_internal(tmp_path / "other", SERVER_NAME)
    # Trusts the real server (so the server side is what refuses), presents its own.
    stranger = GrpcSecurity(
        running.files.ca.read_bytes(), other.cert.read_bytes(), other.key.read_bytes(), SERVER_NAME
    )
    async with channel(running.addr, stranger) as ch:
        assert await deliver(ch) == grpc.StatusCode.UNAVAILABLE
    assert running.servicer.delivered == []


async def test_a_client_does_not_trust_a_server_of_another_ca(
    running: Running, tmp_path: Path
) -> None:
    other = security_of(ensure_internal(tmp_path / "other", SERVER_NAME))
    async with channel(running.addr, other) as ch:
        assert await deliver(ch) == grpc.StatusCode.UNAVAILABLE
    assert running.servicer.delivered == []


async def test_health_has_a_plaintext_port_that_serves_nothing_else(running: Running) -> None:
    assert running.server.health_port not in (0, running.server.port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.server.health_port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", CONNECTOR_SERVICE):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await running.server.set_serving(False)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await deliver(ch) == grpc.StatusCode.UNIMPLEMENTED
    assert running.servicer.delivered == []


async def list_services(ch: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in stub.ServerReflectionInfo(iter([request]), timeout=5):
        return [s.name for s in reply.list_services_response.service]
    return []


@pytest.mark.parametrize("enabled", [False, True])
async def test_reflection_only_when_asked(enabled: bool) -> None:
    server = GrpcServer("127.0.0.1", 0, reflection=enabled)
    server.add(
        connector_pb2_grpc.add_ConnectorServiceServicer_to_server,
        RecordingConnector(),
        CONNECTOR_SERVICE,
    )
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            if enabled:
                assert CONNECTOR_SERVICE in await list_services(ch)
            else:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await list_services(ch)
                assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)


async def test_settings_give_security_only_with_all_three_files(tmp_path: Path) -> None:
    assert grpc_security(Settings()) is None
    with pytest.raises(ValueError, match="IM_INTERNAL_KEY_FILE"):
        grpc_security(Settings(internal_ca_file="/ca.crt", internal_cert_file="/tls.crt"))
    files = ensure_internal(tmp_path, SERVER_NAME)
    settings = Settings(
        internal_ca_file=str(files.ca),
        internal_cert_file=str(files.cert),
        internal_key_file=str(files.key),
        internal_server_name="suite.test",
        user_grpc_port=0,
    )
    security = grpc_security(settings)
    assert security is not None and security.server_name == "suite.test"
    assert security.private_key == files.key.read_bytes()
    assert GrpcServer.for_settings(settings, "user_grpc_port").secure


def test_a_service_without_credentials_must_be_told_it_may_run_open() -> None:
    with pytest.raises(InsecureInternalError, match="IM_INTERNAL_CA_FILE"):
        require_internal_security(Settings())
    require_internal_security(Settings(internal_insecure=True))


async def health_of(addr: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(addr) as ch:
        try:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_internal_servers_bind_the_internal_host_not_the_public_one() -> None:
    settings = Settings(host="127.0.0.1", internal_host="127.0.0.2", internal_insecure=True)
    assert settings.user_addr() == f"127.0.0.2:{settings.user_grpc_port}"
    server = GrpcServer.for_settings(
        settings.model_copy(update={"user_grpc_port": 0}), "user_grpc_port"
    )
    port = await server.start()
    try:
        assert await health_of(f"127.0.0.2:{port}") == grpc.StatusCode.OK
        assert await health_of(f"127.0.0.1:{port}") == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_liveness_stays_serving_while_readiness_goes_down(running: Running) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.server.health_port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        await running.server.set_serving(False)  # e.g. its bus is gone: not ready
        alive = await health.Check(health_pb2.HealthCheckRequest(service=LIVENESS), timeout=5)
        assert alive.status == health_pb2.HealthCheckResponse.SERVING  # no restart for that
