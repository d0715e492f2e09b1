"""TLS for clients: the gateway serves HTTPS and the connector TLS on TCP and
WebSocket when given a certificate; the login answer says so, and the client library
verifies the certificate against the CA it is given (and refuses without it)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from im.client.connection import Connection, tls_context
from im.client.errors import ApiError, ConnectionClosed
from im.client.gateway import GatewayClient
from im.client.session import ImClient
from tests.services.conftest import SecureSuite

PASSWORD = "correct-horse-1"


async def account(suite: SecureSuite, name: str) -> None:
    async with GatewayClient(suite.gateway, ca_file=str(suite.public.ca)) as gw:
        await gw.register(name, PASSWORD)


async def test_the_login_answer_names_tls_endpoints(secure_suite: SecureSuite) -> None:
    assert secure_suite.gateway.startswith("https://")
    await account(secure_suite, "alice")
    async with GatewayClient(secure_suite.gateway, ca_file=str(secure_suite.public.ca)) as gw:
        login = await gw.login("alice", PASSWORD, "phone")
    assert login.connector.tls is True
    assert login.connector.ws.startswith("wss://")


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_messages_flow_over_verified_tls(secure_suite: SecureSuite, transport: str) -> None:
    await account(secure_suite, "alice")
    await account(secure_suite, "bob")
    ca = str(secure_suite.public.ca)
    async with (
        ImClient(secure_suite.gateway, transport=transport, ca_file=ca) as alice,  # type: ignore[arg-type]
        ImClient(secure_suite.gateway, transport=transport, ca_file=ca) as bob,  # type: ignore[arg-type]
    ):
        await alice.login("alice", PASSWORD, "phone")
        await bob.login("bob", PASSWORD, "phone")
        await alice.connect()
        await bob.connect()
        await alice.send_to_user("bob", f"hello over {transport}")
        async with asyncio.timeout(10):
            async for message in bob.messages():
                assert message.body == f"hello over {transport}".encode()
                break


async def test_the_gateway_is_refused_without_the_ca(secure_suite: SecureSuite) -> None:
    async with GatewayClient(secure_suite.gateway) as gw:
        with pytest.raises(ApiError) as caught:
            await gw.register("mallory", PASSWORD)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    plain = secure_suite.gateway.replace("https://", "http://")
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.HTTPError):
            await http.get(f"{plain}/healthz")


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_the_connector_is_refused_without_the_ca(
    secure_suite: SecureSuite, transport: str
) -> None:
    await account(secure_suite, "alice")
    async with GatewayClient(secure_suite.gateway, ca_file=str(secure_suite.public.ca)) as gw:
        login = await gw.login("alice", PASSWORD, "phone")
    address = login.address(transport)
    # The system's CAs do not know the dev CA.
    with pytest.raises(ConnectionClosed, match="CERTIFICATE_VERIFY_FAILED"):
        await Connection.open(address, login.access_token, transport, tls=tls_context())  # type: ignore[arg-type]
    # With the CA it authenticates.
    trusted = tls_context(str(secure_suite.public.ca))
    conn = await Connection.open(address, login.access_token, transport, tls=trusted)  # type: ignore[arg-type]
    assert conn.user_id == login.user_id
    await conn.close()


async def test_a_plaintext_socket_gets_nothing_from_a_tls_connector(
    secure_suite: SecureSuite,
) -> None:
    await account(secure_suite, "alice")
    async with GatewayClient(secure_suite.gateway, ca_file=str(secure_suite.public.ca)) as gw:
        login = await gw.login("alice", PASSWORD, "phone")
    # The connector drops it at the handshake: no Auth frame is ever read.
    with pytest.raises(ConnectionClosed, match="closed by the connector"):
        await Connection.open(login.connector.tcp, login.access_token, "tcp", auth_timeout=3)
