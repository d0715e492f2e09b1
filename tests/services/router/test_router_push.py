"""Offline push from the router (harness.py: a real group service, in-process bus and
presence): members with no online device get a notification, online and muted
members and the sender none, events none, replays none, recalled messages none;
delivery never waits for the webhook."""

from __future__ import annotations

import asyncio

from im.adapters.push_webhook import WebhookOptions, WebhookPushNotifier
from im.events import RECALL
from im.runtime import local_connectors
from im.v1 import bus_pb2, connector_pb2, group_pb2, wire_pb2
from services.router.push import PushDispatcher, preview_of
from tests.im.adapters.webhook_server import webhook_server
from tests.services.router.harness import Harness, make_group, online
from tests.services.router.helpers import CursorsFailOnce, RecordingNotifier
from tests.services.router.test_router_metrics import Scrape


async def with_push(h: Harness, notifier, previews: bool = False) -> PushDispatcher:  # type: ignore[no-untyped-def]
    settings = h.settings.model_copy(update={"push_preview": previews})
    push = PushDispatcher(settings, notifier, h.router._group)
    h.router.push = h.router.delivery.push = push
    await push.start()
    return push


async def settle(h: Harness, push: PushDispatcher) -> None:
    await h.run_bus()
    await asyncio.wait_for(push.idle(), 10)


async def mute(h: Harness, conv: str, user: int, until: int = -1) -> None:
    await h.groups.SetMemberSettings(
        group_pb2.MemberSettingsSetRequest(
            conversation_id=conv,
            user_id=user,
            patch=group_pb2.MemberSettingsPatch(muted_until=until),
        )
    )


async def test_only_offline_members_other_than_the_sender_are_pushed(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    recorder = RecordingNotifier()
    push = await with_push(h, recorder)
    try:
        conv = await make_group(h, 1, [2, 3, 4])
        await online(h, 2)  # 1 (the sender), 3 and 4 are offline
        await h.send(conv, 1, 100)
        await settle(h, push)
    finally:
        await push.close()
    assert sorted(n.user_id for n in recorder.got) == [3, 4]
    n = recorder.got[0]
    assert (n.conversation_id, n.msg_id, n.seq, n.sender_id) == (conv, 100, 1, 1)
    assert n.preview is None  # previews are off by default
    assert (2, 1) in h.connector.delivered()


async def test_muted_members_get_no_push(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    recorder = RecordingNotifier()
    push = await with_push(h, recorder)
    try:
        conv = await make_group(h, 1, [2, 3])
        await mute(h, conv, 2)
        await h.send(conv, 1, 100)
        await settle(h, push)
    finally:
        await push.close()
    assert [n.user_id for n in recorder.got] == [3]
    scrape = Scrape(h.router)
    assert scrape("im_router_push_notifications_total", outcome="muted") == 1
    assert scrape("im_router_push_notifications_total", outcome="queued") == 1
    assert scrape("im_router_push_notifications_total", outcome="dropped") == 0


async def test_events_are_not_pushed(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    recorder = RecordingNotifier()
    push = await with_push(h, recorder)
    try:
        conv = await make_group(h, 1, [2])
        event = wire_pb2.Message(
            msg_id=101, conversation_id=conv, sender_id=1, content_type=RECALL, refers_to=7
        )
        await h.bus.publish(
            h.settings.topic_messages,
            conv,
            bus_pb2.InboundMessage(message=event).SerializeToString(),
        )
        await settle(h, push)
    finally:
        await push.close()
    assert recorder.got == []


async def publish(h: Harness, message: wire_pb2.Message) -> None:
    inbound = bus_pb2.InboundMessage(message=message)
    await h.bus.publish(
        h.settings.topic_messages, message.conversation_id, inbound.SerializeToString()
    )


def text(conv: str, msg_id: int, words: str) -> wire_pb2.Message:
    return wire_pb2.Message(
        msg_id=msg_id,
        conversation_id=conv,
        sender_id=1,
        content_type="text/plain",
        body=words.encode(),
        server_ts=1,
    )


def recall(conv: str, msg_id: int, target: int) -> wire_pb2.Message:
    return wire_pb2.Message(
        msg_id=msg_id, conversation_id=conv, sender_id=1, content_type=RECALL, refers_to=target
    )


async def test_a_message_recalled_in_its_own_batch_is_not_pushed(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    recorder = RecordingNotifier()
    push = await with_push(h, recorder, previews=True)
    try:
        conv = await make_group(h, 1, [2])
        await publish(h, text(conv, 100, "the plan, sent to the wrong group"))
        await publish(h, recall(conv, 101, 100))
        await settle(h, push)
    finally:
        await push.close()
    assert h.router.stats.batches == 1  # the message and its recall together
    assert recorder.got == []


async def test_a_recall_takes_back_the_notifications_still_waiting(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    recorder = RecordingNotifier()  # holds what it is offered, as a queue would
    push = await with_push(h, recorder, previews=True)
    try:
        conv = await make_group(h, 1, [2])
        await publish(h, text(conv, 100, "oops"))
        await settle(h, push)
        assert [(n.msg_id, n.preview) for n in recorder.got] == [(100, "oops")]
        await publish(h, recall(conv, 101, 100))
        await settle(h, push)
    finally:
        await push.close()
    assert recorder.withdrawn == {(conv, 100)}


async def test_a_member_the_connector_no_longer_holds_is_pushed(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    recorder = RecordingNotifier()
    push = await with_push(h, recorder)

    def gone(request: connector_pb2.DeliverRequest) -> connector_pb2.DeliverResponse:
        # The device went away after the router looked it up (presence not yet told).
        missing = [t for d in request.deliveries for t in d.targets if t.user_id == 2]
        return connector_pb2.DeliverResponse(missing=missing)

    local_connectors.add("c1", gone)
    try:
        conv = await make_group(h, 1, [2, 3])
        await online(h, 1, 2, 3)
        await h.send(conv, 1, 100)
        await settle(h, push)
        assert recorder.got == []  # presence still lists 2: rerouted to nowhere new
        await h.kv.disconnect(2, "dev2", "c1")
        await h.send(conv, 1, 101)
        await h.run_bus()
        # 2 is gone from presence now: an ordinary offline member.
        await asyncio.wait_for(push.idle(), 10)
        assert [(n.user_id, n.msg_id) for n in recorder.got] == [(2, 101)]
    finally:
        local_connectors.remove("c1")
        await push.close()


async def test_missing_targets_without_a_fresh_route_are_pushed(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    recorder = RecordingNotifier()
    push = await with_push(h, recorder)
    conv = await make_group(h, 1, [2])
    await online(h, 1)
    message = wire_pb2.Message(msg_id=100, conversation_id=conv, seq=1, sender_id=1)
    try:
        # The connector said 2's device was not there, and presence has no route now.
        await h.router.delivery.reroute([(2, "dev2", message, "c1")], pushable={100})
        await asyncio.wait_for(push.idle(), 10)
        # The same for a replayed message (not stored now): delivered again, not pushed.
        await h.router.delivery.reroute([(2, "dev2", message, "c1")], pushable=set())
        await asyncio.wait_for(push.idle(), 10)
    finally:
        await push.close()
    assert [(n.user_id, n.msg_id) for n in recorder.got] == [(2, 100)]


async def test_a_batch_replayed_after_a_failed_cursor_write_pushes_nothing_again(  # type: ignore[no-untyped-def]
    harness, monkeypatch
) -> None:
    h = harness
    recorder = RecordingNotifier()
    push = await with_push(h, recorder)
    conv = await make_group(h, 1, [2, 3])
    await online(h, 1)
    flaky = CursorsFailOnce(h.router._group())
    monkeypatch.setattr(h.router, "_group", lambda: flaky)
    monkeypatch.setattr(h.router, "_sleep", no_sleep)
    await h.send(conv, 1, 100)
    consumer = h.consumer()
    try:
        await h.router.turn(consumer)  # stored and delivered; the cursor write fails
        assert h.router.failing == 1
        await h.router.turn(consumer)  # rewound: the same batch, a replay now
        assert h.router.failing == 0 and h.router.stats.replayed == 1
        await h.router.flush()
        await asyncio.wait_for(push.idle(), 10)
    finally:
        await consumer.close()
        await push.close()
    assert sorted((n.user_id, n.msg_id) for n in recorder.got) == [(2, 100), (3, 100)]


async def no_sleep(seconds: float) -> None:
    pass


async def test_delivery_does_not_wait_for_a_hanging_webhook(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    with webhook_server() as server:
        server.hang.set()
        notifier = WebhookPushNotifier(WebhookOptions(url=server.url, timeout=30.0, linger=0))
        push = await with_push(h, notifier)
        try:
            conv = await make_group(h, 1, [2, 3])
            await online(h, 1, 2)  # 3 is offline: pushed into a webhook that hangs
            await h.send(conv, 1, 100)
            await asyncio.wait_for(h.run_bus(), 10)
            assert await asyncio.to_thread(server.hanging.wait, 10)
            await h.send(conv, 2, 101)
            await asyncio.wait_for(h.run_bus(), 10)  # still delivering while it hangs
            assert sorted(h.connector.delivered()) == [(1, 1), (1, 2), (2, 1), (2, 2)]
            assert notifier.stats.sent == 0
        finally:
            await push.close()


async def test_a_full_dispatch_queue_drops_and_counts(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    settings = h.settings.model_copy(update={"push_queue_size": 2})
    push = PushDispatcher(settings, RecordingNotifier(), h.router._group)  # not started
    message = wire_pb2.Message(msg_id=1, conversation_id="g:1", seq=1, sender_id=1)
    push.offer(message, [2, 3, 4])
    push.offer(message, [5])
    assert (push.stats.candidates, push.stats.dropped) == (4, 2)


def test_previews_are_short_text_only() -> None:
    text = wire_pb2.Message(content_type="text/plain", body="héllo wörld".encode())
    assert preview_of(text, 5) == "héllo…"
    assert preview_of(text, 50) == "héllo wörld"
    image = wire_pb2.Message(content_type="image/png", body=b"\x89PNG")
    assert preview_of(image, 50) == ""
