"""Offline push end to end, in both modes: a suite (and a cluster) started with
IM_PUSH_WEBHOOK_URL pointing at a real HTTP server of this test, which receives
signed batches for members with no online device, and none for muted ones."""

from __future__ import annotations

import time

import pytest

from im.adapters.push_webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from im.client import ImClient
from tests.e2e.harness import start_cluster, start_suite, stop_cluster, stop_suite
from tests.e2e.helpers import new_user, take_messages
from tests.im.adapters.webhook_server import WebhookServer, webhook_server

pytestmark = pytest.mark.e2e

SECRET = "e2e-push-secret"


@pytest.fixture(scope="module")
def receiver() -> WebhookServer:
    with webhook_server() as server:
        yield server


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("standalone"),
        pytest.param("distributed", marks=pytest.mark.integration),
    ],
)
def gateway(request, receiver, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    push = {
        "push_webhook_url": receiver.url,
        "push_webhook_secret": SECRET,
        "push_preview": "true",
        "push_preview_chars": "10",
    }
    if request.param == "standalone":
        suite = start_suite(tmp_path_factory.mktemp("push-suite"), **push)
        yield suite.gateway
        assert stop_suite(suite) == 0, suite.log()
    else:
        cluster = start_cluster(tmp_path_factory, request.getfixturevalue("real_server"), **push)
        yield cluster.gateway_url
        stop_cluster(cluster)


def pushes_for(receiver: WebhookServer, msg_id: int) -> list[dict]:
    return [n for n in receiver.notifications() if n["msg_id"] == str(msg_id)]


async def close_all(*clients: ImClient) -> None:
    for client in clients:
        await client.close()


async def test_offline_members_are_pushed_signed_and_online_ones_not(gateway, receiver):
    alice, bob, carol = [await new_user(gateway, n) for n in ("alice", "bob", "carol")]
    try:
        group = await alice.gateway.create_group("team", [bob.user_id, carol.user_id])
        conv = group["conversation_id"]
        await alice.connect()
        await bob.connect()  # carol stays offline
        ack = await alice.send(conv, "hello from the team chat")
        await take_messages(bob, 1)
        assert receiver.wait_for(lambda r: pushes_for(r, ack.msg_id))
        (push,) = pushes_for(receiver, ack.msg_id)
        assert push == {
            "user_id": carol.user_id,
            "conversation_id": conv,
            "msg_id": str(ack.msg_id),
            "seq": 1,
            "sender_id": alice.user_id,
            "content_type": "text/plain",
            "server_ts": ack.server_ts,
            "preview": "hello from…",
        }
        request = next(r for r in receiver.received if push in r.notifications())
        assert verify(
            SECRET.encode(),
            request.headers[TIMESTAMP_HEADER],
            request.headers[SIGNATURE_HEADER],
            request.body,
            int(time.time()),
        )
    finally:
        await close_all(alice, bob, carol)


async def test_a_member_who_muted_the_conversation_is_not_pushed(gateway, receiver):
    alice, carol, dave = [await new_user(gateway, n) for n in ("alice", "carol", "dave")]
    try:
        group = await alice.gateway.create_group("team", [carol.user_id, dave.user_id])
        conv = group["conversation_id"]
        await dave.gateway.update_settings(conv, muted_until=-1)
        await alice.connect()  # carol and dave are offline
        ack = await alice.send(conv, "anyone?")
        # Both were offline for the same message: one round of the router's push.
        assert receiver.wait_for(lambda r: pushes_for(r, ack.msg_id))
        assert [n["user_id"] for n in pushes_for(receiver, ack.msg_id)] == [carol.user_id]
    finally:
        await close_all(alice, carol, dave)
