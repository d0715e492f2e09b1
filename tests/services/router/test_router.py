"""The router against a real group service and a recording connector (real gRPC),
with in-process bus, presence and registry (harness.py)."""

from __future__ import annotations

import asyncio

from im import buspack
from im.clock import FakeClock
from im.grpcutil import GrpcServer, service_name
from im.ports import ConnectorInfo
from im.v1 import bus_pb2, connector_pb2, connector_pb2_grpc, group_pb2, wire_pb2
from services.router import delivery, records
from services.router.service import Router, backoff
from tests.services.router.harness import RecordingConnector, make_group, online
from tests.services.router.helpers import FailingStore, RejectingStore


async def test_a_group_message_is_stored_once_and_delivered_to_online_members(harness):
    h = harness
    conv = await make_group(h, 1, [2, 3, 4])
    await online(h, 1, 2, 3)  # 4 is offline
    await h.send(conv, 1, 100)
    await h.run_bus()
    assert sorted(h.connector.delivered()) == [(1, 1), (2, 1), (3, 1)]
    assert len(h.connector.requests) == 1  # one call per connector per batch
    assert [m.msg_id for m in await h.router.store.history(conv, 0, 10)] == [100]


async def test_removed_member_gets_nothing_and_new_member_starts_at_join(harness):
    h = harness
    conv = await make_group(h, 1, [2, 3])
    await online(h, 1, 2, 3, 4)
    await h.send(conv, 1, 100)
    await h.run_bus()
    await h.groups.RemoveMember(
        group_pb2.RemoveMemberRequest(conversation_id=conv, actor_id=1, user_id=3)
    )
    await h.groups.AddMembers(
        group_pb2.AddMembersRequest(conversation_id=conv, actor_id=1, user_ids=[4], at_seq=1)
    )
    # No membership event on the bus: the member_version check alone must catch it.
    await h.send(conv, 2, 101)
    await h.run_bus()
    second = [(u, s) for u, s in h.connector.delivered() if s == 2]
    assert sorted(second) == [(1, 2), (2, 2), (4, 2)]
    assert h.router.members.fetches == 2


async def test_many_acks_become_one_cursor_write(harness):
    h = harness
    conv = await make_group(h, 1, [2])
    for i in range(5):
        await h.send(conv, 1, 100 + i)
    await h.run_bus()
    writes_before = h.router.stats.cursor_writes
    for seq in range(1, 6):
        for _ in range(20):  # 100 acks from a chatty client
            await h.report(conv, 2, delivered=seq)
    await h.run_bus()
    assert h.router.stats.cursor_writes - writes_before == 1
    assert h.router.stats.cursor_reports == 100
    cursors = await h.groups.GetCursors(
        group_pb2.GetCursorsRequest(conversation_id=conv, user_ids=[2])
    )
    assert cursors.members[0].delivered_seq == 5


async def test_reads_are_pushed_as_one_coalesced_receipt(harness):
    h = harness
    conv = await make_group(h, 1, [2, 3])
    await online(h, 1, 2, 3)
    for i in range(3):
        await h.send(conv, 1, 100 + i)
    await h.run_bus()
    for seq in (1, 2, 3):
        await h.report(conv, 2, read=seq)
    await h.run_bus()
    # One receipt (reader 2 up to 3) to every member's device, the reader's included.
    assert sorted(h.connector.receipts()) == [(1, 2, 3), (2, 2, 3), (3, 2, 3)]


async def test_large_groups_push_receipts_only_to_the_readers_devices(harness):
    h = harness  # receipt_push_max_members=3 in this harness
    conv = await make_group(h, 1, [2, 3, 4])
    await online(h, 1, 2, 3, 4)
    await h.send(conv, 1, 100)
    await h.run_bus()
    await h.report(conv, 2, read=1)
    await h.run_bus()
    assert h.connector.receipts() == [(2, 2, 1)]


async def test_direct_messages_need_no_member_lookup(harness):
    h = harness
    await online(h, 5, 6)
    await h.send("d:5:6", 5, 200)
    await h.run_bus()
    assert sorted(h.connector.delivered()) == [(5, 1), (6, 1)]
    assert h.router.members.fetches == 0


async def test_deliveries_tell_connectors_how_far_behind_the_router_is(harness):
    h = harness
    h.router.clock = clock = FakeClock()
    await online(h, 5, 6)
    for msg_id, waited_ms in ((200, 700), (201, 20)):
        message = wire_pb2.Message(
            msg_id=msg_id,
            conversation_id="d:5:6",
            sender_id=5,
            body=b"x",
            server_ts=clock.wall_ms() - waited_ms,
        )
        await h.bus.publish(
            h.settings.topic_messages,
            "d:5:6",
            bus_pb2.InboundMessage(message=message).SerializeToString(),
        )
    await h.run_bus()
    (request,) = h.connector.requests
    assert request.router_lag_ms == 700  # the oldest new message of the batch
    assert request.router_id == h.settings.resolved_router_id()


# ------------------------------------------------------------ poison records


async def test_an_out_of_range_read_is_set_aside_and_the_batch_goes_on(harness):
    h = harness
    conv = await make_group(h, 1, [2])
    await online(h, 1, 2)
    # A stranger's read with a seq no BIGINT holds, in the middle of real traffic.
    await h.send(conv, 1, 100)
    await h.report(conv, 99, read=1 << 63)
    await h.report("g:1", 99, delivered=(1 << 64) - 1)
    await h.send(conv, 2, 101)
    await h.run_bus()
    assert sorted(h.connector.delivered()) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    letters = await h.router.store.dead_letters(10)
    assert len(letters) == 2
    assert all("out of range" in letter.reason for letter in letters)
    assert {letter.topic for letter in letters} == {h.settings.topic_cursors}
    assert h.router.stats.dead_lettered == 2
    assert h.connector.receipts() == []


async def test_undecodable_and_invalid_records_are_set_aside(harness):
    h = harness
    conv = await make_group(h, 1, [2])
    await online(h, 2)
    await h.bus.publish(h.settings.topic_messages, conv, b"\xff\xff not protobuf")
    nameless = wire_pb2.Message(msg_id=0, conversation_id=conv, sender_id=1)
    await h.bus.publish(
        h.settings.topic_messages,
        conv,
        bus_pb2.InboundMessage(message=nameless).SerializeToString(),
    )
    await h.send(conv, 1, 100)
    await h.run_bus()
    assert h.connector.delivered() == [(2, 1)]
    reasons = sorted(letter.reason for letter in await h.router.store.dead_letters(10))
    assert reasons[0] == "message without a msg_id"
    assert reasons[1].startswith("undecodable")


async def test_a_packed_record_is_opened_and_each_message_handled_on_its_own(harness):
    h = harness
    await online(h, 5, 6)

    def inbound(msg_id: int, conv: str = "d:5:6") -> bytes:
        m = wire_pb2.Message(msg_id=msg_id, conversation_id=conv, sender_id=5, server_ts=1)
        return bus_pb2.InboundMessage(message=m).SerializeToString()

    values = [inbound(300), inbound(0), b"\xff\xff not protobuf", inbound(301)]
    await h.bus.publish(h.settings.topic_messages, "d:5:6", buspack.pack(values))
    await h.bus.publish(h.settings.topic_messages, "d:5:6", b"\x7a\x09short")  # a torn pack
    await h.run_bus()
    stored = await h.router.store.history("d:5:6", 0, 10)
    assert [(m.msg_id, m.seq) for m in stored] == [(300, 1), (301, 2)]
    reasons = sorted(letter.reason for letter in await h.router.store.dead_letters(10))
    assert sorted(r.split(":")[0] for r in reasons) == [
        "message without a msg_id",
        "undecodable",  # the bad message inside the pack
        "undecodable batch",  # the torn pack as a whole
    ]


async def test_a_replayed_batch_stores_its_dead_letters_once(harness):
    h = harness
    await h.report("g:1", 5, read=1 << 63)
    consumer = h.bus.consumer([h.settings.topic_cursors], "again")
    records_ = await consumer.poll(10, 0.01)
    await h.router.handle(records_, None)
    await h.router.handle(records_, None)  # as after a rewind
    assert len(await h.router.store.dead_letters(10)) == 1


async def test_reads_are_clamped_to_the_last_message_and_strangers_get_no_receipt(harness):
    h = harness
    conv = await make_group(h, 1, [2])
    await online(h, 1, 2, 3)
    await h.send(conv, 1, 100)
    await h.send(conv, 1, 101)
    await h.run_bus()
    await h.report(conv, 2, read=10**12)  # a member, far beyond the last message
    await h.report(conv, 3, read=2)  # not a member: nothing to report to anyone
    await h.run_bus()
    assert sorted(h.connector.receipts()) == [(1, 2, 2), (2, 2, 2)]
    cursors = await h.groups.GetCursors(
        group_pb2.GetCursorsRequest(conversation_id=conv, user_ids=[2])
    )
    assert (cursors.members[0].delivered_seq, cursors.members[0].read_seq) == (2, 2)
    assert h.router.stats.clamped_reports == 1


async def test_a_store_outage_rewinds_with_backoff_and_leaves_no_gap(harness):
    h = harness
    flaky = FailingStore(h.router.store)
    router = Router(h.settings, h.router.backends, flaky, sleep=record_sleeps(slept := []))
    conv = await make_group(h, 1, [2])
    await online(h, 2)
    for i in range(3):
        await h.send(conv, 1, 100 + i)
    await router.turn(consumer := h.consumer())  # stores 100 and 101 ...
    flaky.fail_after = 1
    await h.send(conv, 1, 103)
    await h.send(conv, 1, 104)
    # (the first turn took all three; the next batch fails half-way, then is replayed)
    await router.turn(consumer)
    assert router.failing == 1 and slept == [0.2]
    await router.turn(consumer)
    await router.flush()
    history = await h.router.store.history(conv, 0, 10)
    assert [(m.msg_id, m.seq) for m in history] == [
        (100, 1),
        (101, 2),
        (102, 3),
        (103, 4),
        (104, 5),
    ]
    assert router.failing == 0
    await consumer.close()


async def test_a_message_the_store_refuses_is_set_aside_without_a_seq(harness):
    h = harness
    router = Router(h.settings, h.router.backends, RejectingStore(h.router.store, 101))
    conv = await make_group(h, 1, [2])
    for i in range(3):
        await h.send(conv, 1, 100 + i)
    consumer = h.consumer()
    await router.turn(consumer)
    await router.flush()
    history = await h.router.store.history(conv, 0, 10)
    assert [(m.msg_id, m.seq) for m in history] == [(100, 1), (102, 2)]
    (letter,) = await h.router.store.dead_letters(10)
    assert letter.reason == "value too long"
    assert bus_pb2.InboundMessage.FromString(letter.value).message.msg_id == 101
    assert router.failing == 0
    await consumer.close()


async def test_an_unforeseen_failure_is_isolated_to_its_record(harness, monkeypatch):
    h = harness
    router = Router(h.settings, h.router.backends, h.router.store, sleep=record_sleeps([]))
    conv = await make_group(h, 1, [2])
    real_report_problem = records.report_problem

    def explode_on_user_66(report):  # type: ignore[no-untyped-def]
        if report.user_id == 66:
            raise KeyError("a bug nobody foresaw")
        return real_report_problem(report)

    monkeypatch.setattr(records, "report_problem", explode_on_user_66)
    await h.send(conv, 1, 100)
    await h.report(conv, 66, read=1)
    await h.send(conv, 1, 101)
    consumer = h.consumer()
    await router.turn(consumer)  # fails as a batch
    assert router.failing == 1
    await router.turn(consumer)  # one record at a time: only the bad one is set aside
    await router.flush()
    assert [m.msg_id for m in await h.router.store.history(conv, 0, 10)] == [100, 101]
    (letter,) = await h.router.store.dead_letters(10)
    assert "a bug nobody foresaw" in letter.reason
    assert router.stats.isolated_batches == 1
    await router.turn(consumer)  # and back to whole batches
    assert router.failing == 0 and not router._isolate
    await consumer.close()


def record_sleeps(slept: list[float]):  # type: ignore[no-untyped-def]
    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return sleep


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, 1.6]
    assert backoff(50) == 10.0


# ------------------------------------------------------------ connector lanes


class StuckConnector(RecordingConnector):
    """Takes Deliver calls and answers none until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def Deliver(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        await self.release.wait()
        return connector_pb2.DeliverResponse()


async def serve_connector(servicer) -> tuple[GrpcServer, int]:  # type: ignore[no-untyped-def]
    server = GrpcServer("127.0.0.1", 0)
    server.add(
        connector_pb2_grpc.add_ConnectorServiceServicer_to_server,
        servicer,
        service_name(connector_pb2, "ConnectorService"),
    )
    return server, await server.start()


async def test_a_stuck_connector_delays_only_its_own_devices(harness, monkeypatch):
    h = harness
    monkeypatch.setattr(delivery, "LANE_DEPTH", 2)
    stuck = StuckConnector()
    server, port = await serve_connector(stuck)
    try:
        await h.router.backends.registry.register(ConnectorInfo("c2", "127.0.0.1", 1, 2, port))
        await h.kv.connect(1, "dev1", "c1", 60)
        await h.kv.connect(2, "dev2", "c2", 60)  # on the stuck connector
        consumer = h.consumer()
        for i in range(6):  # one batch each: the stuck lane fills up, c1 goes on
            await h.send("d:1:2", 1, 100 + i)
            await h.router.handle(await consumer.poll(100, 0.01), consumer)
            await h.router._delivering
        await asyncio.wait_for(h.router.delivery._lanes["c1"].idle(), 5)  # c1 is not held up
        assert [seq for user, seq in h.connector.delivered() if user == 1] == [1, 2, 3, 4, 5, 6]
        assert len(stuck.requests) == 1  # still waiting for its answer
        assert h.router.delivery.stats.dropped == 3  # 1 in flight, 2 queued, 3 dropped
        stuck.release.set()
        await h.router.flush()
        assert len(stuck.requests) == 3
        await consumer.close()
    finally:
        stuck.release.set()
        h.router.delivery.close()
        await server.stop(0)
