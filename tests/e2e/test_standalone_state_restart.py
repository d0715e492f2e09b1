"""Standalone keeps revoked sessions and idempotency keys across a restart (in
``state.db`` in the data folder): a logged-out token stays refused by the gateway and
the connector, and Sends retried under the same client_msg_ids after a restart are
answered with the same msg_ids and stored once. The data folder is private."""

from __future__ import annotations

import asyncio
import stat
import uuid

import pytest

from im.client import ApiError, GatewayClient, ImClient
from im.protocol import HEADER, encode_frame
from im.v1 import wire_pb2
from tests.e2e.harness import start_suite, stop_suite
from tests.e2e.helpers import PASSWORD, new_user

pytestmark = pytest.mark.e2e

RETRIED = 200


async def connector_auth(address: str, token: str) -> wire_pb2.Frame:
    """The connector's answer to an Auth frame on a fresh TCP socket."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(encode_frame(wire_pb2.Frame(auth=wire_pb2.Auth(token=token))))
        (size,) = HEADER.unpack(await asyncio.wait_for(reader.readexactly(HEADER.size), 10))
        return wire_pb2.Frame.FromString(await reader.readexactly(size))
    finally:
        writer.close()


async def refused_by_gateway(gateway: str, token: str) -> int:
    async with GatewayClient(gateway, token=token) as stale:
        with pytest.raises(ApiError) as refused:
            await stale.me()
    return refused.value.status


async def test_a_logged_out_token_stays_refused_after_a_restart(tmp_path):
    data = tmp_path / "suite"
    suite = start_suite(data)
    try:
        alice = await new_user(suite.gateway, "alice")
        token = alice.gateway.token
        assert token
        assert (await connector_auth(suite.tcp, token)).WhichOneof("kind") == "auth_ok"
        await alice.gateway.logout()
        assert await refused_by_gateway(suite.gateway, token) == 401
        await alice.close()
    finally:
        assert stop_suite(suite) == 0

    again = start_suite(data)  # same data folder: same keys, so the token still verifies
    try:
        assert await refused_by_gateway(again.gateway, token) == 401
        answer = await connector_auth(again.tcp, token)
        assert answer.error.code == wire_pb2.ERROR_CODE_AUTH_FAILED, answer
        assert "revoked" in answer.error.message
    finally:
        assert stop_suite(again) == 0

    # What the suite wrote is private to its user.
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    loose = {
        p.name: oct(stat.S_IMODE(p.stat().st_mode))
        for p in data.iterdir()
        if p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o077
    }
    assert loose == {}
    assert {"im.db", "messages.db", "state.db", "jwt-private.pem"} <= {
        p.name for p in data.iterdir()
    }


async def send_all(client: ImClient, conv: str, ids: list[str]) -> dict[str, int]:
    acks = await asyncio.gather(*(client.send(conv, f"m-{c}", client_msg_id=c) for c in ids))
    return {c: ack.msg_id for c, ack in zip(ids, acks, strict=True)}


async def test_sends_retried_after_a_restart_are_stored_once(tmp_path):
    data = tmp_path / "suite"
    ids = [str(uuid.uuid4()) for _ in range(RETRIED)]
    suite = start_suite(data)
    try:
        alice = await new_user(suite.gateway, "alice")
        bob = await new_user(suite.gateway, "bob")
        await alice.connect()
        conv = await alice.direct_conversation_with(bob.username)  # type: ignore[attr-defined]
        first = await send_all(alice, conv, ids)
        name = alice.username  # type: ignore[attr-defined]
        await alice.close()
        await bob.close()
    finally:
        assert stop_suite(suite) == 0

    again = start_suite(data)
    try:
        # The client did not see its acks (say) and sends the same frames again.
        alice = ImClient(again.gateway)
        await alice.login(name, PASSWORD, "dev1")
        await alice.connect()
        retried = await send_all(alice, conv, ids)
        assert retried == first  # the same msg_ids: recognised, not new messages
        # A new message behind them in the conversation: once it is in history, the
        # retries ahead of it have been through the router too.
        last = await alice.send(conv, "after the retries")
        history = []
        for _ in range(100):
            history = [m async for m in alice.gateway.history_all(conv)]
            if any(m.msg_id == last.msg_id for m in history):
                break
            await asyncio.sleep(0.1)
        await alice.close()
    finally:
        assert stop_suite(again) == 0
    assert len(history) == RETRIED + 1
    assert sorted(m.client_msg_id for m in history[:-1]) == sorted(ids)
    assert [m.seq for m in history] == list(range(1, RETRIED + 2))
