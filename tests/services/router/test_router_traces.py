"""The router's part of a message's trace: a span per traced record, child of the
Send's span, whose traceparent goes to the connector in the Delivery; refused
messages and failed batches end their spans as failed; untraced records cost nothing."""

from __future__ import annotations

from im import tracing
from im.v1 import bus_pb2, wire_pb2
from services.router.service import Router
from tests.services.router.harness import Harness, make_group, online
from tests.services.router.helpers import FailingStore, RejectingStore
from tests.services.router.test_router import record_sleeps


async def send_traced(h: Harness, conv: str, msg_id: int, parent: str) -> None:
    message = wire_pb2.Message(
        msg_id=msg_id, conversation_id=conv, sender_id=1, body=b"x", server_ts=1
    )
    record = bus_pb2.InboundMessage(message=message, traceparent=parent)
    await h.bus.publish(h.settings.topic_messages, conv, record.SerializeToString())


def spans_named(exporter, name: str) -> list:  # type: ignore[no-untyped-def]
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_a_traced_message_gets_a_child_span_that_travels_in_the_delivery(
    harness: Harness,
    recorded_spans,  # type: ignore[no-untyped-def]
) -> None:
    h = harness
    conv = await make_group(h, 1, [2])
    await online(h, 2)
    send = tracing.start("connector send")
    await send_traced(h, conv, 100, tracing.traceparent(send))
    await h.send(conv, 1, 101)  # an untraced one in the same batch
    await h.run_bus()

    (route,) = spans_named(recorded_spans, "router route")
    assert route.parent is not None and route.parent.span_id == send.get_span_context().span_id
    assert route.attributes["im.seq"] == 1 and route.attributes["im.conversation_id"] == conv
    assert route.status.is_ok
    deliveries = {d.message.msg_id: d for r in h.connector.requests for d in r.deliveries}
    assert tracing.context_of(deliveries[100].traceparent) is not None
    assert f"-{format(route.context.span_id, '016x')}-" in deliveries[100].traceparent
    assert deliveries[101].traceparent == ""


async def test_refused_and_failed_batches_end_their_spans_as_failed(
    harness: Harness,
    recorded_spans,  # type: ignore[no-untyped-def]
) -> None:
    h = harness
    conv = await make_group(h, 1, [2])
    parent = tracing.traceparent(tracing.start("connector send"))
    router = Router(h.settings, h.router.backends, RejectingStore(h.router.store, 101))
    await send_traced(h, conv, 101, parent)
    consumer = h.consumer()
    await router.turn(consumer)
    await router.flush()
    (refused,) = spans_named(recorded_spans, "router route")
    assert not refused.status.is_ok and "dead letter" in str(refused.status.description)

    recorded_spans.clear()
    flaky = FailingStore(h.router.store)
    flaky.fail_after = 0
    router = Router(h.settings, h.router.backends, flaky, sleep=record_sleeps([]))
    await send_traced(h, conv, 102, parent)
    await router.turn(consumer)  # fails, rewinds
    await router.turn(consumer)  # the replay goes through
    await router.flush()
    failed, replayed = spans_named(recorded_spans, "router route")
    assert not failed.status.is_ok and replayed.status.is_ok
    await consumer.close()


async def test_without_recorded_traces_records_carry_nothing_on(harness: Harness) -> None:
    h = harness
    conv = await make_group(h, 1, [2])
    await online(h, 2)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await send_traced(h, conv, 100, parent)
    await h.run_bus()
    (delivery,) = [d for r in h.connector.requests for d in r.deliveries]
    assert delivery.traceparent == ""
