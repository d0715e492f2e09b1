"""ConnectorCore on an injectable clock: no sockets, no sleeps."""

from __future__ import annotations

import asyncio

import pytest

from im.adapters.memory import MemoryBus, MemoryKV, MemoryRegistry
from im.auth import TokenIssuer, TokenVerifier, generate_key_pair
from im.clock import FakeClock
from im.config import Settings
from im.ports import Backends
from im.v1 import bus_pb2, connector_pb2, wire_pb2
from services.connector.service import Conn, ConnectorCore

E = wire_pb2


class RecordingConn(Conn):
    """A connection whose socket is a list of frames."""

    __slots__ = ("frames", "was_closed")

    def __init__(self, conn_id: int, now: float) -> None:
        super().__init__(conn_id, now)
        self.frames: list[wire_pb2.Frame] = []
        self.was_closed = False

    def _write(self, payload: bytes) -> None:
        self.frames.append(wire_pb2.Frame.FromString(payload))

    def _close(self) -> None:
        self.was_closed = True

    def kinds(self) -> list[str]:
        return [f.WhichOneof("kind") for f in self.frames]

    def last(self, kind: str) -> wire_pb2.Frame:
        return [f for f in self.frames if f.WhichOneof("kind") == kind][-1]


class AllowList:
    def __init__(self, allowed: set[tuple[int, str]]) -> None:
        self.allowed = allowed

    async def may_send(self, user_id: int, conversation_id: str) -> bool:
        return (user_id, conversation_id) in self.allowed


@pytest.fixture
def keys():
    private, public = generate_key_pair()
    return TokenIssuer(private, "test", 3600), TokenVerifier(public, "test")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def setup(keys, clock, tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        heartbeat_interval=10,
        heartbeat_misses=3,
        auth_timeout=5,
        retransmit_timeout=2,
        retransmit_attempts=3,
        send_rate_per_second=1,
        send_burst=3,
        max_body_bytes=100,
    )
    bus = MemoryBus(partitions=2)
    kv = MemoryKV(clock)
    backends = Backends(
        bus=bus,
        registry=MemoryRegistry(),
        presence=kv,
        sessions=kv,
        idempotency=kv,
        rate_limits=kv,
    )
    core = ConnectorCore(settings, backends, keys[1], clock=clock)
    core.authorizer = AllowList({(1, "d:1:2"), (2, "d:1:2")})
    return core, keys[0], bus, kv


def open_conn(core: ConnectorCore) -> RecordingConn:
    conn = RecordingConn(core.new_conn_id(), core.clock.monotonic())
    core.opened(conn)
    return conn


async def authed(core: ConnectorCore, issuer: TokenIssuer, user: int, device: str = "d1"):
    conn = open_conn(core)
    token, _ = issuer.issue(user, device)
    core.on_frame(conn, wire_pb2.Frame(auth=wire_pb2.Auth(token=token)))
    await core.wait_background()
    assert conn.kinds()[-1] == "auth_ok", conn.frames
    return conn


def send(conn_core, conn, cid: str, conv: str = "d:1:2", body: bytes = b"hi") -> None:
    conn_core.on_frame(
        conn,
        wire_pb2.Frame(
            send=wire_pb2.Send(
                client_msg_id=cid, conversation_id=conv, content_type="text/plain", body=body
            )
        ),
    )


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
    core._recent_acks.clear()  # as if the retransmit reached another connector
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


def deliver_request(seq: int, user: int = 2, device: str = "d1") -> connector_pb2.DeliverRequest:
    msg = wire_pb2.Message(
        msg_id=1000 + seq, conversation_id="d:1:2", seq=seq, sender_id=1, body=b"m"
    )
    return connector_pb2.DeliverRequest(
        deliveries=[
            connector_pb2.Delivery(
                message=msg, targets=[connector_pb2.DeviceRef(user_id=user, device_id=device)]
            )
        ]
    )


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

    async def publish_many(self, topic, records):  # type: ignore[no-untyped-def]
        if self.fail_next:
            self.fail_next -= 1
            # Like a broker timing out after taking part of the batch.
            await super().publish_many(topic, records[:1])
            raise ConnectionError("broker timed out")
        await super().publish_many(topic, records)


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
