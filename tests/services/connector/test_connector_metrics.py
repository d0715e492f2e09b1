"""The connector's metrics move when their events happen: read from a registry the way
a scrape does, on the fake clock (no sockets, no sleeps)."""

from __future__ import annotations

import asyncio

import pytest

from im.metrics import MetricsRegistry
from im.v1 import connector_pb2, wire_pb2
from services.connector import metrics as connector_metrics
from services.connector.service import ConnectorCore
from tests.services.connector.helpers import (
    RecordingConn,
    authed,
    deliver_request,
    open_conn,
    send,
)

E = wire_pb2


class Scrape:
    def __init__(self, core: ConnectorCore) -> None:
        self.metrics = MetricsRegistry(process_collectors=False)
        connector_metrics.register(self.metrics, core)

    def __call__(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        assert value is not None, f"no sample {name}{labels}"
        return value


@pytest.fixture
def scrape(setup) -> Scrape:
    return Scrape(setup[0])


class WsRecordingConn(RecordingConn):
    kind = "ws"
    __slots__ = ()

    def queued_bytes(self) -> int:
        return 100 * self.conn_id


def frames(scrape: Scrape, direction: str, kind: str) -> float:
    return scrape("im_connector_frames_total", direction=direction, kind=kind)


async def test_connections_by_transport_and_auth(setup, scrape: Scrape) -> None:
    core, issuer, *_ = setup
    for transport in ("tcp", "ws"):
        for authed_ in ("true", "false"):
            assert scrape("im_connector_connections", transport=transport, authed=authed_) == 0
    ws = WsRecordingConn(core.new_conn_id(), core.clock.monotonic())
    core.opened(ws)
    assert scrape("im_connector_connections", transport="ws", authed="false") == 1
    token, _ = issuer.issue(1, "d1")
    core.on_frame(ws, wire_pb2.Frame(auth=wire_pb2.Auth(token=token)))
    await core.wait_background()
    assert scrape("im_connector_connections", transport="ws", authed="false") == 0
    assert scrape("im_connector_connections", transport="ws", authed="true") == 1
    core.closed(ws)
    assert scrape("im_connector_connections", transport="ws", authed="true") == 0


async def test_outbox_bytes_sum_and_largest(setup, scrape: Scrape) -> None:
    core, *_ = setup
    conns = [WsRecordingConn(core.new_conn_id(), core.clock.monotonic()) for _ in range(2)]
    for conn in conns:
        core.opened(conn)
    ids = [c.conn_id for c in conns]
    assert scrape("im_connector_outbox_bytes", transport="ws") == 100 * sum(ids)
    assert scrape("im_connector_outbox_bytes", transport="tcp") == 0
    assert scrape("im_connector_outbox_max_bytes") == 100 * max(ids)


async def test_frames_in_and_out_by_kind(setup, scrape: Scrape) -> None:
    core, issuer, *_ = setup
    conn = await authed(core, issuer, 1)
    assert frames(scrape, "in", "auth") == 1
    assert frames(scrape, "out", "auth_ok") == 1
    core.on_frame(conn, wire_pb2.Frame(ping=wire_pb2.Ping()))
    assert frames(scrape, "in", "ping") == 1
    assert frames(scrape, "out", "pong") == 1
    send(core, conn, "c1")
    await core.wait_background()
    assert frames(scrape, "in", "send") == 1
    assert frames(scrape, "out", "send_ack") == 1
    send(core, conn, "big", body=b"x" * 101)  # refused: an Error frame
    assert frames(scrape, "out", "error") == 1
    core.on_frame(conn, wire_pb2.Frame())  # no kind at all
    assert frames(scrape, "in", "empty") == 1
    assert frames(scrape, "out", "error") == 2
    core.protocol_error(conn, E.ERROR_CODE_BAD_FRAME, "garbage")
    assert frames(scrape, "in", "undecodable") == 1
    assert frames(scrape, "out", "error") == 3


async def test_send_ack_seconds_from_arrival_to_ack(setup, clock) -> None:
    core, issuer, bus, _kv = setup
    gate = asyncio.Event()
    publish_many = bus.publish_many

    async def slow_publish(topic: str, records: list[tuple[str, bytes]]) -> None:
        await gate.wait()
        await publish_many(topic, records)

    bus.publish_many = slow_publish  # type: ignore[method-assign]
    scrape = Scrape(core)
    conn = await authed(core, issuer, 1)
    send(core, conn, "c1")  # arrives now; its worker waits for the bus
    clock.advance(0.3)
    gate.set()
    await core.wait_background()
    assert conn.last("send_ack").send_ack.client_msg_id == "c1"
    assert scrape("im_connector_send_ack_seconds_count") == 1
    assert scrape("im_connector_send_ack_seconds_sum") == pytest.approx(0.3)
    assert scrape("im_connector_send_ack_seconds_bucket", le="0.25") == 0
    assert scrape("im_connector_send_ack_seconds_bucket", le="0.5") == 1
    # A retransmit answered from the remembered ack is quick, and counted too.
    send(core, conn, "c1")
    await core.wait_background()
    assert scrape("im_connector_send_ack_seconds_count") == 2
    assert scrape("im_connector_send_ack_seconds_sum") == pytest.approx(0.3)


async def test_deliveries_retransmits_and_give_ups(setup, clock, scrape: Scrape) -> None:
    core, issuer, *_ = setup
    await authed(core, issuer, 2)
    core.deliver(deliver_request(1))
    assert scrape("im_connector_deliveries_total") == 1
    assert frames(scrape, "out", "deliver") == 1
    assert scrape("im_connector_retransmits_total") == 0
    for seconds in (2.1, 4.1, 8.1):  # retransmit_timeout 2 s, doubling
        clock.advance(seconds)
        core.tick()
    assert scrape("im_connector_retransmits_total") == 3
    assert frames(scrape, "out", "deliver") == 4
    assert scrape("im_connector_delivery_give_ups_total") == 0
    clock.advance(16.1)
    core.tick()
    assert scrape("im_connector_delivery_give_ups_total") == 1
    assert scrape("im_connector_deliveries_total") == 1


async def test_receipts_are_frames_but_not_deliveries(setup, scrape: Scrape) -> None:
    core, issuer, *_ = setup
    await authed(core, issuer, 2)
    request = deliver_request(1)
    receipt = request.receipts.add()
    receipt.receipt.CopyFrom(wire_pb2.Receipt(conversation_id="d:1:2", reader_id=1, read_seq=1))
    receipt.targets.add(user_id=2, device_id="d1")
    assert core.deliver(request).pushed == 2
    assert scrape("im_connector_deliveries_total") == 1
    assert frames(scrape, "out", "receipt") == 1


async def test_kicks_by_reason(setup, scrape: Scrape) -> None:
    core, issuer, *_ = setup
    await authed(core, issuer, 1, "phone")
    await authed(core, issuer, 1, "phone")  # the same device again: the first is kicked
    assert scrape("im_connector_kicks_total", reason="device_logged_in_elsewhere") == 1
    assert core.kick(1, "phone", E.KICK_REASON_TOKEN_REVOKED) == 1
    assert scrape("im_connector_kicks_total", reason="token_revoked") == 1
    open_conn(core)
    core.drain()
    assert scrape("im_connector_kicks_total", reason="reconnect") == 1
    assert frames(scrape, "out", "kick") == 3
    assert scrape("im_connector_kicks_total", reason="unspecified") == 0


async def test_admission_refusals_sends_in_flight_and_router_lag(setup, scrape: Scrape) -> None:
    core, issuer, *_ = setup
    conn = await authed(core, issuer, 1)
    assert scrape("im_connector_sends_refused_total") == 0
    core.deliver(
        connector_pb2.DeliverRequest(
            router_lag_ms=core.settings.max_router_lag_ms + 250, router_id="r1"
        )
    )
    assert (
        scrape("im_connector_router_lag_seconds") == (core.settings.max_router_lag_ms + 250) / 1000
    )
    send(core, conn, "c1")  # refused at once: BUSY
    assert scrape("im_connector_sends_refused_total") == 1
    core.deliver(connector_pb2.DeliverRequest(router_lag_ms=0, router_id="r1"))
    send(core, conn, "c2")
    assert scrape("im_connector_sends_in_flight") == 1  # taken, waiting for the bus
    await core.wait_background()
    assert scrape("im_connector_sends_in_flight") == 0


def test_a_second_connector_on_one_registry_is_refused(setup) -> None:
    core = setup[0]
    metrics = MetricsRegistry(process_collectors=False)
    connector_metrics.register(metrics, core)
    with pytest.raises(ValueError, match="Duplicated"):
        connector_metrics.register(metrics, core)


async def test_typing_and_presence_are_counted(setup, scrape: Scrape) -> None:
    core, issuer, *_ = setup
    await authed(core, issuer, 2)
    alice = await authed(core, issuer, 1)  # bob hears of it: one presence signal
    typing = wire_pb2.Typing(conversation_id="d:1:2", state=E.TYPING_STATE_STARTED)
    core.on_frame(alice, wire_pb2.Frame(typing=typing))
    await core.wait_background()
    assert scrape("im_connector_typing_total", outcome="relayed") == 1
    assert scrape("im_connector_presence_total", event="online") == 2
    assert scrape("im_connector_signals_total", outcome="sent") == 2
    assert frames(scrape, "out", "signal") == 2
