"""The push webhook adapter against a real HTTP server: batches, a signature the
receiver can verify, retries with backoff on 5xx (not on 4xx), a bounded queue, and
recalled messages taken back from the queue and from a batch being retried."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from im.adapters.push_webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookOptions,
    WebhookPushNotifier,
    sign,
    verify,
)
from im.clock import SystemClock
from im.ports import PushNotification
from tests.im.adapters.webhook_server import WebhookServer, webhook_server

SECRET = "s3cret"


class QuickClock(SystemClock):
    """Real time, but backoff and linger waits are recorded and skipped."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def server() -> Iterator[WebhookServer]:
    with webhook_server() as running:
        yield running


def note(i: int, user: int = 7) -> PushNotification:
    return PushNotification(
        user_id=user,
        conversation_id="g:1",
        msg_id=2**63 + i,  # beyond JSON's safe integers: sent as a string
        seq=i,
        sender_id=3,
        content_type="text/plain",
        server_ts=1_700_000_000_000 + i,
        preview=None,
    )


def notifier(server: WebhookServer, clock: QuickClock, **options) -> WebhookPushNotifier:  # type: ignore[no-untyped-def]
    values = {"url": server.url, "secret": SECRET, "timeout": 2.0, **options}
    return WebhookPushNotifier(WebhookOptions(**values), clock=clock)


async def settle(push: WebhookPushNotifier) -> None:
    await asyncio.wait_for(push.idle(), 15)


async def test_queued_notifications_go_in_batches_of_at_most_batch_size(server) -> None:  # type: ignore[no-untyped-def]
    push = notifier(server, QuickClock(), batch_size=2)
    assert push.offer([note(i) for i in range(1, 6)]) == 5  # queued before the sender runs
    await push.start()
    try:
        await settle(push)
    finally:
        await push.close()
    assert [len(r.notifications()) for r in server.received] == [2, 2, 1]
    first = server.received[0].notifications()[0]
    assert first == {
        "user_id": 7,
        "conversation_id": "g:1",
        "msg_id": str(2**63 + 1),
        "seq": 1,
        "sender_id": 3,
        "content_type": "text/plain",
        "server_ts": 1_700_000_000_001,
        "preview": None,
    }
    assert (push.stats.queued, push.stats.sent, push.stats.failed) == (5, 5, 0)


async def test_the_receiver_verifies_the_signature_over_the_raw_body(server) -> None:  # type: ignore[no-untyped-def]
    push = notifier(server, QuickClock())
    await push.start()
    try:
        push.offer([note(1)])
        await settle(push)
    finally:
        await push.close()
    (request,) = server.received
    timestamp, signature = request.headers[TIMESTAMP_HEADER], request.headers[SIGNATURE_HEADER]
    now = int(time.time())
    assert verify(SECRET.encode(), timestamp, signature, request.body, now)
    assert not verify(b"wrong", timestamp, signature, request.body, now)
    assert not verify(SECRET.encode(), timestamp, signature, request.body + b" ", now)
    # A replay long after is refused by its timestamp, though the signature matches.
    assert not verify(SECRET.encode(), timestamp, signature, request.body, now + 3600)
    assert signature == sign(SECRET.encode(), int(timestamp), request.body)
    assert json.loads(request.body)["notifications"][0]["seq"] == 1


async def test_a_500_is_retried_with_backoff_then_succeeds(server) -> None:  # type: ignore[no-untyped-def]
    server.script = [500, 503]
    clock = QuickClock()
    push = notifier(server, clock, retry_base=0.5, linger=0)
    await push.start()
    try:
        push.offer([note(1), note(2)])
        await settle(push)
    finally:
        await push.close()
    assert len(server.received) == 3
    assert clock.slept == [0.5, 1.0]  # exponential
    # One batch: the same body and delivery id on every attempt, re-signed each time.
    assert len({r.body for r in server.received}) == 1
    assert len({r.headers[DELIVERY_HEADER] for r in server.received}) == 1
    assert (push.stats.sent, push.stats.failed) == (2, 0)


async def test_a_400_is_not_retried(server) -> None:  # type: ignore[no-untyped-def]
    server.script = [400]
    clock = QuickClock()
    push = notifier(server, clock, linger=0)
    await push.start()
    try:
        push.offer([note(1)])
        await settle(push)
        push.offer([note(2)])  # the next batch goes on
        await settle(push)
    finally:
        await push.close()
    assert len(server.received) == 2
    assert clock.slept == []
    assert (push.stats.sent, push.stats.failed) == (1, 1)


async def test_retries_end_after_max_attempts(server) -> None:  # type: ignore[no-untyped-def]
    server.script = [500] * 10
    push = notifier(server, QuickClock(), max_attempts=3, linger=0)
    await push.start()
    try:
        push.offer([note(1)])
        await settle(push)
    finally:
        await push.close()
    assert len(server.received) == 3
    assert (push.stats.sent, push.stats.failed) == (0, 1)


async def test_a_connection_error_is_retried() -> None:
    with webhook_server() as gone:
        url = gone.url  # a port nobody listens on once the server is shut down
    clock = QuickClock()
    push = WebhookPushNotifier(
        WebhookOptions(url=url, secret=SECRET, max_attempts=2, linger=0), clock=clock
    )
    await push.start()
    try:
        push.offer([note(1)])
        await settle(push)
    finally:
        await push.close()
    assert clock.slept == [0.5]
    assert push.stats.failed == 1


async def test_a_full_queue_drops_and_counts_the_overflow(server, caplog) -> None:  # type: ignore[no-untyped-def]
    push = notifier(server, QuickClock(), queue_size=3)
    assert push.offer([note(i) for i in range(1, 6)]) == 3
    assert push.offer([note(6)]) == 0
    assert (push.stats.queued, push.stats.dropped) == (3, 3)
    assert "push queue full" in caplog.text
    await push.start()
    try:
        await settle(push)
    finally:
        await push.close()
    assert [n["seq"] for n in server.notifications()] == [1, 2, 3]


async def test_offer_returns_at_once_while_the_receiver_hangs(server) -> None:  # type: ignore[no-untyped-def]
    server.hang.set()
    push = notifier(server, QuickClock(), timeout=30.0, linger=0)
    await push.start()
    try:
        push.offer([note(1)])
        assert await asyncio.to_thread(server.hanging.wait, 10)  # out, and unanswered
        assert push.offer([note(2)]) == 1  # taken without waiting for the network
        assert push.stats.sent == 0
    finally:
        await push.close()  # bounded, though the receiver never answers


async def test_a_recall_drops_the_queued_notifications_of_its_message(server) -> None:  # type: ignore[no-untyped-def]
    push = notifier(server, QuickClock(), linger=0)
    push.offer([note(1, user=7), note(2, user=7), note(1, user=8)])  # before the sender runs
    push.withdraw({("g:1", note(1).msg_id)})
    assert (push.pending(), push.stats.withdrawn) == (1, 2)
    await push.start()
    try:
        await settle(push)
    finally:
        await push.close()
    assert [n["seq"] for n in server.notifications()] == [2]


class RecallDuringBackoff(QuickClock):
    """The recall of message ``seq`` arrives while a failed batch waits for its retry."""

    def __init__(self, seq: int) -> None:
        super().__init__()
        self.seq = seq
        self.push: WebhookPushNotifier | None = None

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        assert self.push is not None
        self.push.withdraw({("g:1", note(self.seq).msg_id)})


async def test_a_retry_leaves_out_a_message_recalled_meanwhile(server) -> None:  # type: ignore[no-untyped-def]
    server.script = [500]
    clock = RecallDuringBackoff(1)
    push = clock.push = notifier(server, clock, linger=0)
    await push.start()
    try:
        push.offer([note(1), note(2)])
        await settle(push)
    finally:
        await push.close()
    first, retry = server.received
    assert [n["seq"] for n in first.notifications()] == [1, 2]
    assert [n["seq"] for n in retry.notifications()] == [2]
    assert first.headers[DELIVERY_HEADER] == retry.headers[DELIVERY_HEADER]
    assert (push.stats.sent, push.stats.withdrawn) == (1, 1)


async def test_a_batch_whose_messages_were_all_recalled_is_not_retried(server) -> None:  # type: ignore[no-untyped-def]
    server.script = [500]
    clock = RecallDuringBackoff(1)
    push = clock.push = notifier(server, clock, linger=0)
    await push.start()
    try:
        push.offer([note(1, user=7), note(1, user=8)])
        await settle(push)
    finally:
        await push.close()
    assert len(server.received) == 1
    assert (push.stats.sent, push.stats.failed, push.stats.withdrawn) == (0, 0, 2)
