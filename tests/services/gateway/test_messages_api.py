"""Sending over REST (POST /v1/conversations/{id}/messages): the socket's limits,
members only, idempotent by client_msg_id with the socket's own record, rate-limited
per user, 503 when the bus does not take it."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import pytest

from im.adapters.memory import MemoryBus
from im.attachments import new_attachment_id
from im.ids import direct_conversation_id
from im.ports import BackendUnavailable
from im.sending import ACK_RECORD, idempotency_key
from im.v1 import bus_pb2, wire_pb2
from tests.services.gateway.helpers import assert_problem

if TYPE_CHECKING:
    from .conftest import Suite


class DeadBus(MemoryBus):
    async def publish(self, topic: str, key: str, value: bytes) -> None:
        raise BackendUnavailable("bus", "down")


def published(suite: Suite) -> list[wire_pb2.Message]:
    """The messages on the bus's inbound topic, as the router would read them."""
    bus = suite.backends.bus
    assert isinstance(bus, MemoryBus)
    partitions = bus._logs.get(suite.settings.topic_messages, [])
    return [bus_pb2.InboundMessage.FromString(v).message for p in partitions for _k, v in p]


async def pair(suite: Suite) -> tuple[int, dict[str, str], int, str]:
    """alice (id, headers), bob's id, and their 1:1 conversation (created)."""
    alice, headers = await suite.user("alice")
    bob = await suite.register("bob")
    r = await suite.client.post("/v1/conversations/direct", json={"peer_id": bob}, headers=headers)
    assert r.status_code == 200, r.text
    return alice, headers, bob, r.json()["conversation_id"]


def url(conversation_id: str) -> str:
    return f"/v1/conversations/{conversation_id}/messages"


async def test_a_text_message_is_published_as_the_user_and_device(suite: Suite) -> None:
    alice, headers, _bob, cid = await pair(suite)
    r = await suite.client.post(
        url(cid), json={"client_msg_id": "m1", "text": "héllo"}, headers=headers
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {"msg_id", "conversation_id", "client_msg_id", "server_ts"}
    assert isinstance(body["msg_id"], str) and int(body["msg_id"]) > 0
    assert body["conversation_id"] == cid and body["client_msg_id"] == "m1"
    (message,) = published(suite)
    assert message.msg_id == int(body["msg_id"]) and message.server_ts == body["server_ts"]
    assert (message.sender_id, message.sender_device) == (alice, "phone")
    assert message.content_type == "text/plain" and message.body == "héllo".encode()


ATTACHED = [new_attachment_id() for _ in range(10)]  # IM_MAX_ATTACHMENTS_PER_MESSAGE


async def test_a_binary_body_and_attachments(suite: Suite) -> None:
    _alice, headers, _bob, cid = await pair(suite)
    raw = bytes(range(256))
    r = await suite.client.post(
        url(cid),
        json={
            "client_msg_id": "bin",
            "content_type": "application/octet-stream",
            "body_base64": base64.b64encode(raw).decode(),
            "attachment_ids": ATTACHED,
        },
        headers=headers,
    )
    assert r.status_code == 202, r.text
    (message,) = published(suite)
    assert message.body == raw and message.content_type == "application/octet-stream"
    assert list(message.attachment_ids) == ATTACHED


async def test_a_retry_returns_the_first_msg_id(suite: Suite) -> None:
    _alice, headers, _bob, cid = await pair(suite)
    send = {"client_msg_id": "again", "text": "once"}
    first = await suite.client.post(url(cid), json=send, headers=headers)
    second = await suite.client.post(url(cid), json=send, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    # Published twice under one msg_id (the first try may not have reached the bus):
    # the router stores a msg_id once.
    assert {m.msg_id for m in published(suite)} == {int(first.json()["msg_id"])}


async def test_a_client_msg_id_sent_over_the_socket_first_is_the_same_message(
    suite: Suite,
) -> None:
    alice, headers, _bob, cid = await pair(suite)
    # What a connector wrote when it accepted the socket Send "s1".
    await suite.kv.claim(idempotency_key(alice, "s1"), ACK_RECORD.pack(777, 1_800_000_000_000), 60)
    r = await suite.client.post(
        url(cid), json={"client_msg_id": "s1", "text": "x"}, headers=headers
    )
    assert r.status_code == 202, r.text
    assert (r.json()["msg_id"], r.json()["server_ts"]) == ("777", 1_800_000_000_000)


@pytest.mark.parametrize(
    ("payload", "status", "where"),
    [
        ({"text": "no id"}, 422, "client_msg_id"),
        ({"client_msg_id": "", "text": "x"}, 422, "client_msg_id"),
        ({"client_msg_id": "x" * 65, "text": "x"}, 422, "client_msg_id"),
        ({"client_msg_id": "~recall:1", "text": "x"}, 422, "client_msg_id"),
        ({"client_msg_id": "a"}, 422, "exactly one"),
        ({"client_msg_id": "a", "text": "x", "body_base64": "eA=="}, 422, "exactly one"),
        ({"client_msg_id": "a", "body_base64": "not base64!"}, 422, "body_base64"),
        ({"client_msg_id": "a", "text": "x", "content_type": ""}, 422, "content_type"),
        ({"client_msg_id": "a", "text": "x", "content_type": "t" * 65}, 422, "content_type"),
        ({"client_msg_id": "a", "text": "x", "content_type": "text/\x00"}, 422, "content_type"),
        (
            {"client_msg_id": "a", "text": "x", "attachment_ids": [*ATTACHED, "A" * 22]},
            422,
            "at most 10",
        ),
        ({"client_msg_id": "a", "text": "x", "attachment_ids": ["x"]}, 422, "malformed"),
        ({"client_msg_id": "a", "text": "x", "attachment_ids": ["a b"]}, 422, "malformed"),
        ({"client_msg_id": "a", "text": "x", "attachment_ids": ATTACHED[:1] * 2}, 422, "repeat"),
    ],
)
async def test_input_is_held_to_the_socket_limits(
    suite: Suite, payload: dict, status: int, where: str
) -> None:
    _alice, headers, _bob, cid = await pair(suite)
    r = await suite.client.post(url(cid), json=payload, headers=headers)
    assert where in assert_problem(r, status, "invalid_request")["detail"]
    assert published(suite) == []


@pytest.mark.parametrize("settings_overrides", [{"max_attachments_per_message": 0}])
async def test_attachments_can_be_turned_off(suite: Suite) -> None:
    _alice, headers, _bob, cid = await pair(suite)
    r = await suite.client.post(
        url(cid),
        json={"client_msg_id": "a", "text": "x", "attachment_ids": ATTACHED[:1]},
        headers=headers,
    )
    assert "at most 0" in assert_problem(r, 422, "invalid_request")["detail"]
    r = await suite.client.post(url(cid), json={"client_msg_id": "b", "text": "x"}, headers=headers)
    assert r.status_code == 202, r.text


async def test_text_with_a_lone_surrogate_is_refused(suite: Suite) -> None:
    _alice, headers, _bob, cid = await pair(suite)
    raw = b'{"client_msg_id": "s", "text": "a\\ud800b"}'  # valid JSON, not valid Unicode
    r = await suite.client.post(
        url(cid), content=raw, headers={**headers, "content-type": "application/json"}
    )
    assert "surrogate" in assert_problem(r, 422, "invalid_request")["detail"]


async def test_a_body_over_the_socket_limit_is_413(suite: Suite) -> None:
    _alice, headers, _bob, cid = await pair(suite)
    limit = suite.settings.max_body_bytes
    ok = await suite.client.post(
        url(cid), json={"client_msg_id": "full", "text": "x" * limit}, headers=headers
    )
    assert ok.status_code == 202, ok.text
    big = await suite.client.post(
        url(cid),
        json={"client_msg_id": "big", "body_base64": base64.b64encode(b"x" * (limit + 1)).decode()},
        headers=headers,
    )
    assert str(limit) in assert_problem(big, 413, "payload_too_large")["detail"]


@pytest.mark.parametrize("content_type", ["application/vnd.im.recall", "application/vnd.im.x"])
async def test_reserved_event_types_are_refused(suite: Suite, content_type: str) -> None:
    _alice, headers, _bob, cid = await pair(suite)
    r = await suite.client.post(
        url(cid),
        json={"client_msg_id": "ev", "text": "", "content_type": content_type},
        headers=headers,
    )
    assert "reserved" in assert_problem(r, 422, "invalid_request")["detail"]
    assert published(suite) == []


async def test_members_only(suite: Suite) -> None:
    _alice, alice_headers, bob, cid = await pair(suite)
    _carol, carol_headers = await suite.user("carol")
    r = await suite.client.post(
        url(cid), json={"client_msg_id": "c", "text": "x"}, headers=carol_headers
    )
    assert_problem(r, 403, "forbidden")
    group = await suite.client.post("/v1/groups", json={"name": "g"}, headers=alice_headers)
    gid = group.json()["conversation_id"]
    r = await suite.client.post(
        url(gid), json={"client_msg_id": "c", "text": "x"}, headers=carol_headers
    )
    assert_problem(r, 403, "forbidden")
    for unknown in ("g:999999", f"d:{bob}:999999"):
        r = await suite.client.post(
            url(unknown), json={"client_msg_id": "c", "text": "x"}, headers=alice_headers
        )
        assert_problem(r, 403, "forbidden")  # like a conversation of others: not probeable
    r = await suite.client.post(
        url("nope"), json={"client_msg_id": "c", "text": "x"}, headers=alice_headers
    )
    assert_problem(r, 404, "not_found")
    assert published(suite) == []
    r = await suite.client.post(
        url(gid), json={"client_msg_id": "g", "text": "x"}, headers=alice_headers
    )
    assert r.status_code == 202, r.text


async def test_the_first_message_creates_the_direct_conversation(suite: Suite) -> None:
    alice, headers = await suite.user("alice")
    bob = await suite.register("bob")
    cid = direct_conversation_id(alice, bob)
    r = await suite.client.post(
        url(cid), json={"client_msg_id": "hi", "text": "hi"}, headers=headers
    )
    assert r.status_code == 202, r.text
    listed = await suite.client.get("/v1/conversations", headers=headers)
    assert cid in [c["conversation_id"] for c in listed.json()["conversations"]]


async def test_a_token_is_needed(suite: Suite) -> None:
    r = await suite.client.post(url("d:1:2"), json={"client_msg_id": "a", "text": "x"})
    assert_problem(r, 401, "unauthorized")


@pytest.mark.parametrize("settings_overrides", [{"send_burst": 3, "send_rate_per_second": 0.01}])
async def test_sends_are_rate_limited_per_user(suite: Suite) -> None:
    _alice, headers, _bob, cid = await pair(suite)
    for i in range(3):
        r = await suite.client.post(
            url(cid), json={"client_msg_id": f"r{i}", "text": "x"}, headers=headers
        )
        assert r.status_code == 202, r.text
    r = await suite.client.post(
        url(cid), json={"client_msg_id": "r3", "text": "x"}, headers=headers
    )
    body = assert_problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1 and body["retry_after"] >= 1
    # Another user has an allowance of their own.
    _carol, carol_headers = await suite.user("carol")
    bob_cid = direct_conversation_id(_carol, _bob)
    r = await suite.client.post(
        url(bob_cid), json={"client_msg_id": "c", "text": "x"}, headers=carol_headers
    )
    assert r.status_code == 202, r.text


async def test_a_bus_failure_is_503_and_the_retry_keeps_the_msg_id(suite: Suite) -> None:
    alice, headers, _bob, cid = await pair(suite)
    working = suite.backends.bus
    suite.backends.bus = DeadBus(partitions=1)
    try:
        r = await suite.client.post(
            url(cid), json={"client_msg_id": "b", "text": "x"}, headers=headers
        )
        assert "same client_msg_id" in assert_problem(r, 503, "unavailable")["detail"]
        assert r.headers["retry-after"] == "1"
    finally:
        suite.backends.bus = working
    claimed = await suite.kv.claim(idempotency_key(alice, "b"), b"other", 60)
    assert claimed is not None
    retry = await suite.client.post(
        url(cid), json={"client_msg_id": "b", "text": "x"}, headers=headers
    )
    assert retry.status_code == 202, retry.text
    assert int(retry.json()["msg_id"]) == ACK_RECORD.unpack(claimed)[0]
    assert [m.msg_id for m in published(suite)] == [int(retry.json()["msg_id"])]
