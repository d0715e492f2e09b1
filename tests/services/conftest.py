"""A standalone suite in this process, as `imctl standalone` runs it: internal gRPC
with the dev certificates it makes in its data dir, and the public listeners (gateway,
connector TCP and WebSocket) on TLS with a dev CA of the test's own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from im.adapters.factory import reset_memory
from im.config import Settings
from im.grpcutil import GrpcSecurity, grpc_security
from im.standalone import Suite
from im.tls import CertFiles, ensure_public

ADMIN_TOKEN = "secure-suite-admin-token-0123456789abcdef"


@dataclass
class SecureSuite:
    suite: Suite
    public: CertFiles  # ca.crt: what clients trust

    @property
    def settings(self) -> Settings:
        return self.suite.settings

    @property
    def gateway(self) -> str:
        return self.suite.endpoints()["gateway"]["http"]

    @property
    def security(self) -> GrpcSecurity:
        security = grpc_security(self.settings)
        assert security is not None
        return security

    def grpc_addr(self, service: str) -> str:
        if service == "admin":
            return self.suite.endpoints()["gateway"]["admin_grpc"]
        if service == "connector":
            info = self.suite.services["connector"].core.info  # type: ignore[attr-defined]
            return info.grpc_addr
        return self.suite.endpoints()[service]["grpc"]


@pytest.fixture
async def secure_suite(tmp_path: Path) -> AsyncIterator[SecureSuite]:
    public = ensure_public(tmp_path / "public", ["127.0.0.1", "localhost"])
    ports = (
        "gateway_port",
        "user_grpc_port",
        "group_grpc_port",
        "connector_grpc_port",
        "router_grpc_port",
        "gateway_grpc_port",
        "connector_tcp_port",
        "connector_ws_port",
    )
    memory = f"memory://secure-{uuid.uuid4().hex[:8]}"  # in-process backends of its own
    settings = Settings(
        data_dir=tmp_path / "data",
        bus_url=memory,
        registry_url=memory,
        kv_url=memory,
        argon2_time_cost=1,
        argon2_memory_kib=8192,
        tls_cert_file=str(public.cert),
        tls_key_file=str(public.key),
        admin_token=ADMIN_TOKEN,  # the gateway's AdminService on mutual TLS too
        admin_grpc_port=0,
        **{port: 0 for port in ports},
    )
    suite = Suite(settings)
    try:
        await suite.start()
        yield SecureSuite(suite, public)
    finally:
        await suite.stop()
        reset_memory(memory.removeprefix("memory://"))
