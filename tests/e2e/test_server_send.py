"""Server-side send end to end, in both modes: a REST send reaches the peer's socket
live and is stored once however often it is retried; an internal service sends as a
bot user over the gateway's gRPC MessageService; non-members are refused both ways."""

from __future__ import annotations

import grpc
import pytest

from im.client import ApiError, ImClient
from im.client.service_send import ServiceSender
from im.tls import cert_files
from tests.e2e.helpers import new_user, take_messages

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateway(target) -> str:  # type: ignore[no-untyped-def]
    return target.gateway


@pytest.fixture
async def service(target):  # type: ignore[no-untyped-def]
    """An internal caller with the suite's certificate."""
    files = cert_files(target.internal_tls)
    async with ServiceSender.from_files(
        target.gateway_grpc, ca_file=files.ca, cert_file=files.cert, key_file=files.key
    ) as sender:
        yield sender


async def close_all(*clients: ImClient) -> None:
    for client in clients:
        await client.close()


async def test_a_rest_send_reaches_the_socket_and_is_stored_once(gateway):
    alice, bob = await new_user(gateway, "alice"), await new_user(gateway, "bob")
    try:
        conv = (await alice.gateway.direct_conversation(bob.user_id))["conversation_id"]
        await bob.connect()
        first = await alice.gateway.post_message(conv, "over REST", client_msg_id="rest-1")
        (got,) = await take_messages(bob, 1)
        assert (got.msg_id, got.sender_id, got.body) == (first.msg_id, alice.user_id, b"over REST")
        assert got.seq == 1 and got.sender_device == "dev1"

        retry = await alice.gateway.post_message(conv, "over REST", client_msg_id="rest-1")
        assert retry == first
        # The topic is ordered per conversation: once the next message is delivered,
        # the retry before it has been through the router too.
        second = await alice.gateway.post_message(conv, "next", client_msg_id="rest-2")
        (nxt,) = await take_messages(bob, 1)
        assert (nxt.msg_id, nxt.seq) == (second.msg_id, 2)
        page = await bob.gateway.history(conv)
        assert [(m.msg_id, m.seq) for m in page.messages] == [(first.msg_id, 1), (second.msg_id, 2)]
    finally:
        await close_all(alice, bob)


async def test_a_bot_sends_over_grpc(gateway, service):  # type: ignore[no-untyped-def]
    bot, bob = await new_user(gateway, "bot"), await new_user(gateway, "bob")
    try:
        group = await bot.gateway.create_group("alerts", [bob.user_id])
        conv = group["conversation_id"]
        await bob.connect()
        sent = await service.send(
            bot.user_id, conv, "deploy finished", client_msg_id="b1", sender_device="ci-bot"
        )
        (got,) = await take_messages(bob, 1)
        assert (got.msg_id, got.sender_id, got.sender_device) == (
            sent.msg_id,
            bot.user_id,
            "ci-bot",
        )
        assert got.body == b"deploy finished" and got.conversation_id == conv
        again = await service.send(bot.user_id, conv, "deploy finished", client_msg_id="b1")
        assert again.msg_id == sent.msg_id
    finally:
        await close_all(bot, bob)


async def test_non_members_are_refused(gateway, service):  # type: ignore[no-untyped-def]
    alice, bob, eve = [await new_user(gateway, n) for n in ("alice", "bob", "eve")]
    try:
        group = await alice.gateway.create_group("private", [bob.user_id])
        conv = group["conversation_id"]
        with pytest.raises(ApiError) as refused:
            await eve.gateway.post_message(conv, "let me in")
        assert (refused.value.status, refused.value.code) == (403, "forbidden")
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await service.send(eve.user_id, conv, "let me in")
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (await alice.gateway.history(conv)).messages == []
    finally:
        await close_all(alice, bob, eve)
