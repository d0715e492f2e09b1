"""ConnectorCore on an injectable clock: no sockets, no sleeps."""

from __future__ import annotations

import asyncio

from im.adapters.memory import MemoryBus, MemoryKV
from im.v1 import bus_pb2, wire_pb2
from tests.services.connector.helpers import authed, deliver_request, open_conn, send

E = wire_pb2


async def test_first_frame_must_be_auth(setup):
    core, *_ = setup
    conn = open_conn(core)
    send(core, conn, "c1")
    assert conn.last("error").error.code == E.ERROR_CODE_AUTH_REQUIRED
    assert conn.was_closed


async def test_bad_token_is_refused(setup):
    core, *_ = setup
    conn = open_conn(core)
    core.on_frame(conn, wire_pb2.Frame(auth=wire_pb2.Auth(token="not-a-jwt")))
    await core.wait_background()
    assert conn.last("error").error.code == E.ERROR_CODE_AUTH_FAILED
    assert conn.was_closed


async def test_revoked_session_is_refused(setup):
    core, issuer, _bus, kv = setup
    token, claims = issuer.issue(1, "d1")
    await kv.revoke(claims.session_id, 60)
    conn = open_conn(core)
    core.on_frame(conn, wire_pb2.Frame(auth=wire_pb2.Auth(token=token)))
    await core.wait_background()
    assert conn.last("error").error.code == E.ERROR_CODE_AUTH_FAILED


async def test_auth_records_presence(setup):
    core, issuer, _bus, kv = setup
    await authed(core, issuer, 1, "phone")
    routes = await kv.routes([1])
    assert [(r.device_id, r.connector_id) for r in routes[1]] == [("phone", core.connector_id)]


async def test_auth_deadline(setup, clock):
    core, *_ = setup
    conn = open_conn(core)
    clock.advance(4.9)
    core.tick()
    assert not conn.was_closed
    clock.advance(0.2)
    core.tick()
    assert conn.last("error").error.code == E.ERROR_CODE_AUTH_TIMEOUT
    assert conn.was_closed
    assert core.connection_count() == 0


async def test_heartbeat_keeps_alive_and_silence_closes(setup, clock):
    core, issuer, *_ = setup
    conn = await authed(core, issuer, 1)
    clock.advance(25)
    core.on_frame(conn, wire_pb2.Frame(request_id=7, ping=wire_pb2.Ping()))
    assert conn.last("pong").request_id == 7
    clock.advance(25)
    assert core.sweep_idle() == 0
    clock.advance(6)  # 31 s since the ping: more than 3 intervals of 10 s
    assert core.sweep_idle() == 1
    assert conn.last("error").error.code == E.ERROR_CODE_HEARTBEAT_TIMEOUT
    assert conn.was_closed


async def test_send_publishes_then_acks(setup):
    core, issuer, bus, _kv = setup
    conn = await authed(core, issuer, 1)
    send(core, conn, "c1")
    await core.wait_background()
    ack = conn.last("send_ack").send_ack
    assert ack.client_msg_id == "c1" and ack.msg_id > 0
    consumer = bus.consumer(["im.messages"], "g")
    records = await consumer.poll(10, 0.01)
    assert len(records) == 1
    msg = bus_pb2.InboundMessage.FromString(records[0].value).message
    assert (msg.msg_id, msg.sender_id, msg.sender_device, msg.body) == (ack.msg_id, 1, "d1", b"hi")
    assert records[0].key == "d:1:2"


async def test_same_client_msg_id_gets_same_ack_and_one_message(setup):
    core, issuer, bus, _kv = setup
    conn = await authed(core, issuer, 1)
    send(core, conn, "c1")
    send(core, conn, "c1")  # retransmit while the first is in flight
    await core.wait_background()
    send(core, conn, "c1")  # and after it was acked
    await core.wait_background()
    acks = [f.send_ack for f in conn.frames if f.WhichOneof("kind") == "send_ack"]
    assert len(acks) == 3
    assert len({a.msg_id for a in acks}) == 1
    records = await bus.consumer(["im.messages"], "g").poll(10, 0.01)
    assert len(records) == 1


async def test_idempotency_survives_reconnect(setup):
    core, issuer, bus, _kv = setup
    first = await authed(core, issuer, 1)
    send(core, first, "c9")
    await core.wait_background()
    core.sends.recent_acks.clear()  # as if the retransmit reached another connector
    second = await authed(core, issuer, 1, "d1")
    send(core, second, "c9")
    await core.wait_background()
    assert second.last("send_ack").send_ack.msg_id == first.last("send_ack").send_ack.msg_id
    # Published again under the same msg_id; the router stores a msg_id once.
    records = await bus.consumer(["im.messages"], "g").poll(10, 0.01)
    ids = {bus_pb2.InboundMessage.FromString(r.value).message.msg_id for r in records}
    assert len(ids) == 1


async def test_forbidden_and_invalid_sends_keep_the_connection(setup):
    core, issuer, *_ = setup
    conn = await authed(core, issuer, 3)
    send(core, conn, "c1")
    await core.wait_background()
    assert conn.last("error").error.code == E.ERROR_CODE_FORBIDDEN
    assert conn.last("error").error.client_msg_id == "c1"
    send(core, conn, "c2", conv="nonsense")
    assert conn.last("error").error.code == E.ERROR_CODE_INVALID_ARGUMENT
    send(core, conn, "", conv="d:1:2")
    assert conn.last("error").error.code == E.ERROR_CODE_INVALID_ARGUMENT
    assert not conn.was_closed


async def test_body_limit(setup):
    core, issuer, *_ = setup
    conn = await authed(core, issuer, 1)
    send(core, conn, "big", body=b"x" * 101)
    assert conn.last("error").error.code == E.ERROR_CODE_BODY_TOO_LARGE
    assert not conn.was_closed


async def test_rate_limit_refills_with_time(setup, clock):
    core, issuer, *_ = setup
    conn = await authed(core, issuer, 1)
    for i in range(4):
        send(core, conn, f"r{i}")
    await core.wait_background()
    assert conn.last("error").error.code == E.ERROR_CODE_RATE_LIMITED
    assert len([f for f in conn.frames if f.WhichOneof("kind") == "send_ack"]) == 3
    clock.advance(1.0)
    send(core, conn, "r9")
    await core.wait_background()
    assert conn.last("send_ack").send_ack.client_msg_id == "r9"


async def test_retransmit_with_backoff_then_give_up(setup, clock):
    core, issuer, *_ = setup
    conn = await authed(core, issuer, 2)
    reply = core.deliver(deliver_request(1))
    assert reply.pushed == 1 and not reply.missing
    count = lambda: len([f for f in conn.frames if f.WhichOneof("kind") == "deliver"])  # noqa: E731
    assert count() == 1
    clock.advance(1.9)
    core.tick()
    assert count() == 1
    clock.advance(0.2)  # 2 s: first resend
    core.tick()
    assert count() == 2
    clock.advance(3.9)  # backoff doubles to 4 s
    core.tick()
    assert count() == 2
    clock.advance(0.2)
    core.tick()
    assert count() == 3
    clock.advance(8.1)
    core.tick()
    assert count() == 4
    clock.advance(16.1)  # attempts exhausted: stop; the message waits for sync
    core.tick()
    assert count() == 4
    assert core.stats.gave_up == 1
    assert conn.pending_count() == 0


async def test_cumulative_ack_stops_retransmits(setup, clock):
    core, issuer, *_ = setup
    conn = await authed(core, issuer, 2)
    for seq in (1, 2, 3):
        core.deliver(deliver_request(seq))
    core.on_frame(
        conn, wire_pb2.Frame(deliver_ack=wire_pb2.DeliverAck(conversation_id="d:1:2", seq=2))
    )
    clock.advance(2.1)
    core.tick()
    resent = [f.deliver.message.seq for f in conn.frames if f.WhichOneof("kind") == "deliver"][3:]
    assert resent == [3]


async def test_acks_are_coalesced_into_one_report(setup):
    core, issuer, bus, _kv = setup
    conn = await authed(core, issuer, 2)
    for seq in range(1, 51):
        core.on_frame(
            conn, wire_pb2.Frame(deliver_ack=wire_pb2.DeliverAck(conversation_id="d:1:2", seq=seq))
        )
    await core.wait_background()  # the one membership lookup for d:1:2
    assert core.authorizer.lookups == [["d:1:2"]]
    assert await core.flush_cursor_reports() == 1
    records = await bus.consumer(["im.cursors"], "g").poll(100, 0.01)
    assert len(records) == 1
    report = bus_pb2.CursorReport.FromString(records[0].value)
    assert (report.user_id, report.delivered_seq) == (2, 50)


async def test_deliver_reports_missing_devices(setup):
    core, *_ = setup
    reply = core.deliver(deliver_request(1, user=9, device="gone"))
    assert reply.pushed == 0
    assert [(m.user_id, m.device_id) for m in reply.missing] == [(9, "gone")]


async def test_same_device_again_kicks_the_older_connection(setup, clock):
    core, issuer, _bus, kv = setup
    first = await authed(core, issuer, 1, "phone")
    second = await authed(core, issuer, 1, "phone")
    assert first.last("kick").kick.reason == E.KICK_REASON_DEVICE_LOGGED_IN_ELSEWHERE
    assert first.was_closed and not second.was_closed
    await asyncio.sleep(0)
    await core.wait_background()
    routes = await kv.routes([1])
    assert [r.device_id for r in routes[1]] == ["phone"]  # still present: the new one


async def test_kick_by_session(setup):
    core, issuer, *_ = setup
    conn = await authed(core, issuer, 1, "phone")
    assert core.kick(1, "phone", E.KICK_REASON_TOKEN_REVOKED, session_id="other") == 0
    assert core.kick(1, "phone", E.KICK_REASON_TOKEN_REVOKED, session_id=conn.session_id) == 1
    assert conn.last("kick").kick.reason == E.KICK_REASON_TOKEN_REVOKED


async def test_drain_kicks_everyone_with_reconnect(setup):
    core, issuer, *_ = setup
    a = await authed(core, issuer, 1, "a")
    b = open_conn(core)
    core.drain()
    assert a.last("kick").kick.reason == E.KICK_REASON_RECONNECT
    assert b.was_closed
    late = open_conn(core)
    assert late.was_closed


class FlakyBus(MemoryBus):
    def __init__(self) -> None:
        super().__init__(partitions=2)
        self.fail_next = 0

    async def publish_packed(self, topic, records, pack):  # type: ignore[no-untyped-def]
        if self.fail_next:
            self.fail_next -= 1
            # Like a broker timing out after taking part of the batch.
            await super().publish_packed(topic, records[:1], pack)
            raise ConnectionError("broker timed out")
        await super().publish_packed(topic, records, pack)


async def test_retry_after_a_failed_publish_reuses_the_msg_id(setup):
    core, issuer, _bus, _kv = setup
    bus = FlakyBus()
    core.backends.bus = bus
    conn = await authed(core, issuer, 1)
    bus.fail_next = 1
    send(core, conn, "c1")
    await core.wait_background()
    assert conn.last("error").error.code == E.ERROR_CODE_UNAVAILABLE
    send(core, conn, "c1")  # the client retries
    await core.wait_background()
    ack = conn.last("send_ack").send_ack
    records = await bus.consumer(["im.messages"], "g").poll(10, 0.01)
    ids = [bus_pb2.InboundMessage.FromString(r.value).message.msg_id for r in records]
    assert ids == [ack.msg_id, ack.msg_id]  # two records, one message: the router dedupes


# ------------------------------------------------------------- before AuthOk


async def test_a_ping_before_auth_closes_instead_of_ponging(setup):
    core, *_ = setup
    conn = open_conn(core)
    for _ in range(1000):  # a pre-auth flood costs one frame of work
        core.on_frame(conn, wire_pb2.Frame(ping=wire_pb2.Ping()))
    assert conn.kinds() == ["error"]
    assert conn.last("error").error.code == E.ERROR_CODE_AUTH_REQUIRED
    assert conn.was_closed
    assert core.connection_count() == 0


class SlowSessions:
    """A session store whose is_revoked waits until released, or raises."""

    def __init__(self, error: Exception | None = None) -> None:
        self.release = asyncio.Event()
        self.error = error

    async def is_revoked(self, session_id: str) -> bool:
        if self.error is not None:
            raise self.error
        await self.release.wait()
        return False


async def test_frames_before_auth_ok_close_the_connection(setup, keys):
    core, issuer, *_ = setup
    core.backends.sessions = SlowSessions()
    conn = open_conn(core)
    token, _ = issuer.issue(1, "d1")
    core.on_frame(conn, wire_pb2.Frame(auth=wire_pb2.Auth(token=token)))
    await asyncio.sleep(0)
    send(core, conn, "c1")  # did not wait for AuthOk
    assert conn.last("error").error.code == E.ERROR_CODE_AUTH_REQUIRED
    assert conn.was_closed
    core.backends.sessions.release.set()
    await core.wait_background()
    assert "auth_ok" not in conn.kinds()
    assert core.by_device == {}


async def test_a_hung_backend_during_auth_hits_the_auth_deadline(setup, clock):
    core, issuer, _bus, kv = setup
    core.backends.sessions = SlowSessions()
    conn = open_conn(core)
    token, _ = issuer.issue(1, "d1")
    core.on_frame(conn, wire_pb2.Frame(auth=wire_pb2.Auth(token=token)))
    await asyncio.sleep(0)
    clock.advance(5.1)
    core.tick()
    assert conn.last("error").error.code == E.ERROR_CODE_AUTH_TIMEOUT
    assert conn.was_closed
    core.backends.sessions.release.set()  # the backend answers after all: too late
    await core.wait_background()
    assert "auth_ok" not in conn.kinds()
    assert core.by_device == {} and core.connection_count() == 0
    assert await kv.routes([1]) == {}


async def test_a_session_store_failure_closes_instead_of_half_authenticating(setup):
    from im.ports import BackendUnavailable

    core, issuer, *_ = setup
    core.backends.sessions = SlowSessions(BackendUnavailable("redis", "down"))
    conn = open_conn(core)
    token, _ = issuer.issue(1, "d1")
    core.on_frame(conn, wire_pb2.Frame(auth=wire_pb2.Auth(token=token)))
    await core.wait_background()
    assert conn.kinds() == ["error"]
    assert conn.last("error").error.code == E.ERROR_CODE_UNAVAILABLE
    assert conn.was_closed and not conn.authed
    assert core.connection_count() == 0


class BrokenPresence(MemoryKV):
    async def connect(self, user_id, device_id, connector_id, ttl):  # type: ignore[no-untyped-def]
        raise ConnectionError("reset by peer")


async def test_a_presence_failure_closes_instead_of_half_authenticating(setup, clock):
    core, issuer, *_ = setup
    core.backends.presence = BrokenPresence(clock)
    conn = open_conn(core)
    token, _ = issuer.issue(1, "d1")
    core.on_frame(conn, wire_pb2.Frame(auth=wire_pb2.Auth(token=token)))
    await core.wait_background()
    assert conn.kinds() == ["error"]
    assert conn.last("error").error.code == E.ERROR_CODE_UNAVAILABLE
    assert conn.was_closed
    assert core.by_device == {} and core.connection_count() == 0
    # Nothing is delivered to a connection that never got AuthOk.
    assert core.deliver(deliver_request(1, user=1)).pushed == 0


# ------------------------------------------------------------------- presence


class RestartingPresence(MemoryKV):
    """In-process presence that can 'restart' empty, or be unreachable."""

    def __init__(self, clock) -> None:  # type: ignore[no-untyped-def]
        super().__init__(clock)
        self.incarnation = "one"
        self.down = False

    async def instance(self) -> str:
        if self.down:
            raise ConnectionError("presence store unreachable")
        return self.incarnation

    def restart(self) -> None:
        self._presence.clear()
        self.incarnation += "+1"


async def test_presence_is_reasserted_after_the_store_restarts(setup, clock):
    core, issuer, *_ = setup
    store = core.backends.presence = RestartingPresence(clock)
    await authed(core, issuer, 1, "phone")
    await authed(core, issuer, 2, "web")
    await core.watch_presence()
    store.restart()  # a Redis that came back empty: nobody would get anything live
    assert await store.routes([1, 2]) == {}
    clock.advance(1)
    await core.watch_presence()  # one second later, not thirty
    routes = await store.routes([1, 2])
    assert {(u, r.device_id) for u, rs in routes.items() for r in rs} == {(1, "phone"), (2, "web")}


async def test_presence_is_reasserted_once_an_unreachable_store_is_back(setup, clock):
    core, issuer, *_ = setup
    store = core.backends.presence = RestartingPresence(clock)
    await authed(core, issuer, 1, "phone")
    await core.watch_presence()
    store.down = True
    store._presence.clear()  # lost while it was away, same incarnation (a failover)
    clock.advance(1)
    await core.watch_presence()
    store.down = False
    clock.advance(1)
    await core.watch_presence()
    assert [r.device_id for r in (await store.routes([1]))[1]] == ["phone"]


async def test_delivering_a_dissolved_event_makes_the_conversation_read_only(setup):
    from im import events

    core, issuer, *_ = setup
    conn = await authed(core, issuer, 2)
    request = deliver_request(1, user=2)
    request.deliveries[0].message.content_type = events.GROUP_DISSOLVED
    core.deliver(request)  # before the member sees the event, the connector knows
    send(core, conn, "after", conv="d:1:2")
    await core.wait_background()
    error = conn.last("error").error
    assert error.code == E.ERROR_CODE_FORBIDDEN and "dissolved" in error.message
