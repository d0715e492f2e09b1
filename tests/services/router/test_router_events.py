"""Recall and edit events through the router (harness.py): stored and delivered like
any message, applied to their target in the store, idempotent on replay, and an event
without a target never fails its batch."""

from __future__ import annotations

from im import events
from im.ports import BackendUnavailable
from im.v1 import bus_pb2, wire_pb2
from services.router.service import Router
from tests.services.router.harness import Harness, make_group, online


async def publish_event(
    h: Harness, conv: str, sender: int, msg_id: int, kind: str, target: int, body: bytes = b""
) -> None:
    message = wire_pb2.Message(
        msg_id=msg_id,
        conversation_id=conv,
        sender_id=sender,
        client_msg_id=f"event-{msg_id}",
        content_type=kind,
        refers_to=target,
        body=body,
        server_ts=5000 + msg_id,
    )
    record = bus_pb2.InboundMessage(message=message).SerializeToString()
    await h.bus.publish(h.settings.topic_messages, conv, record)


async def state(h: Harness, msg_id: int) -> wire_pb2.Message:
    return (await h.router.store.get_by_msg_ids([msg_id]))[msg_id]


async def test_an_edit_then_a_recall_are_delivered_in_order_and_applied(harness):
    h = harness
    conv = await make_group(h, 1, [2])
    await online(h, 2)
    await h.send(conv, 1, 100)
    await h.run_bus()
    await publish_event(h, conv, 1, 101, events.EDIT, 100, b"new text")
    await h.run_bus()
    edited = await state(h, 100)
    assert edited.body == b"new text" and edited.edited_at == 5101
    await publish_event(h, conv, 1, 102, events.RECALL, 100)
    await h.run_bus()
    history = await h.router.store.history(conv, 0, 10)
    assert [(m.msg_id, m.seq) for m in history] == [(100, 1), (101, 2), (102, 3)]
    assert history[0].recalled and history[0].body == b""
    assert history[1].body == b""  # the edit's text went with the recall
    assert [s for u, s in h.connector.delivered() if u == 2] == [1, 2, 3]
    assert h.router.stats.events_applied == 2 and h.router.stats.orphan_events == 0


async def test_a_replayed_batch_applies_its_events_again_harmlessly(harness):
    h = harness
    conv = await make_group(h, 1, [2])
    await h.send(conv, 1, 100)
    await publish_event(h, conv, 1, 101, events.EDIT, 100, b"first edit")
    await publish_event(h, conv, 1, 102, events.EDIT, 100, b"second edit")
    consumer = h.consumer()
    polled = await consumer.poll(100, 0.01)
    await h.router.handle(polled, None)  # stored and applied, never committed ...
    await h.router.handle(polled, consumer)  # ... so replayed after a restart
    await h.router.flush()
    assert h.router.stats.replayed == 3
    m = await state(h, 100)
    assert m.body == b"second edit" and m.edited_at == 5102
    await consumer.close()


async def test_an_event_without_a_target_is_stored_and_changes_nothing(harness):
    h = harness
    conv = await make_group(h, 1, [2])
    other = await make_group(h, 3, [4])
    await h.send(conv, 1, 100)
    await h.send(other, 3, 200)
    await h.run_bus()
    await publish_event(h, conv, 1, 101, events.RECALL, 999)  # no such message
    await publish_event(h, conv, 1, 102, events.RECALL, 200)  # another conversation's
    await h.send(conv, 1, 103)
    await h.run_bus()
    assert [m.seq for m in await h.router.store.history(conv, 0, 10)] == [1, 2, 3, 4]
    assert not (await state(h, 200)).recalled
    assert h.router.stats.orphan_events == 2
    assert h.router.failing == 0 and await h.router.store.dead_letters(10) == []


class FlakyEvents:
    """The SQL store whose apply_events is down once."""

    def __init__(self, store) -> None:  # type: ignore[no-untyped-def]
        self._store = store
        self.down = True

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._store, name)

    async def apply_events(self, messages):  # type: ignore[no-untyped-def]
        if self.down:
            self.down = False
            raise BackendUnavailable("message store", "connection reset")
        return await self._store.apply_events(messages)


async def test_a_store_outage_while_applying_rewinds_and_the_replay_applies(harness):
    h = harness
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    router = Router(h.settings, h.router.backends, FlakyEvents(h.router.store), sleep=sleep)
    conv = await make_group(h, 1, [2])
    await h.send(conv, 1, 100)
    await publish_event(h, conv, 1, 101, events.RECALL, 100)
    consumer = h.consumer()
    await router.turn(consumer)
    assert router.failing == 1 and slept == [0.2] and not (await state(h, 100)).recalled
    await router.turn(consumer)
    await router.flush()
    assert router.failing == 0 and (await state(h, 100)).recalled
    assert [m.seq for m in await h.router.store.history(conv, 0, 10)] == [1, 2]
    await consumer.close()
