"""Admission control: under overload Sends are refused at once with BUSY and a
retry-after, nothing of them stored or held; the same Send is taken once the
pressure is gone."""

from __future__ import annotations

from im.v1 import connector_pb2, wire_pb2
from services.connector.admission import (
    LAG_REPORT_TTL,
    RETRY_AFTER_MAX_MS,
    RETRY_AFTER_MIN_MS,
    Admission,
)
from tests.services.connector.helpers import authed, send
from tests.services.connector.test_sendpath import answers

E = wire_pb2


def test_sends_are_taken_while_nothing_presses() -> None:
    admission = Admission(max_inflight=2, max_lag_ms=500)
    assert admission.retry_after_ms(0.0) is None
    admission.note_lag("r1", 499, 0.0)
    assert admission.retry_after_ms(0.0) is None
    assert admission.refused == 0


def test_too_many_in_flight_refuses_with_the_shortest_retry_after() -> None:
    admission = Admission(max_inflight=2, max_lag_ms=500)
    admission.inflight = 2
    assert admission.retry_after_ms(0.0) == RETRY_AFTER_MIN_MS
    admission.inflight = 1
    assert admission.retry_after_ms(0.0) is None
    assert admission.refused == 1


def test_the_worst_router_lag_decides_and_wears_off() -> None:
    admission = Admission(max_inflight=100, max_lag_ms=500)
    admission.note_lag("r1", 800, 0.0)
    admission.note_lag("r2", 10, 0.0)
    assert admission.retry_after_ms(0.0) == 800  # about the time to catch up
    # A report wears off: 800 ms behind, 0.2 s ago and quiet since: 600 ms left.
    assert admission.lag_ms(0.2) == 600
    assert admission.retry_after_ms(0.35) is None  # 450 left: under the limit
    admission.note_lag("r1", 60_000, 1.0)
    assert admission.retry_after_ms(1.0) == RETRY_AFTER_MAX_MS  # bounded
    # A router that stopped reporting (no traffic here, or gone) holds nothing back.
    assert admission.retry_after_ms(1.0 + LAG_REPORT_TTL + 0.1) is None
    assert admission.lag_ms(1.0 + LAG_REPORT_TTL + 0.1) == 0


def test_lag_is_ignored_when_turned_off() -> None:
    admission = Admission(max_inflight=100, max_lag_ms=0)
    admission.note_lag("r1", 10_000, 0.0)
    assert admission.retry_after_ms(0.0) is None


def lag_report(lag_ms: int) -> connector_pb2.DeliverRequest:
    return connector_pb2.DeliverRequest(router_lag_ms=lag_ms, router_id="router-1")


async def test_a_lagging_router_makes_the_connector_refuse_sends_at_once(setup, clock):
    core, issuer, bus, _kv = setup
    conn = await authed(core, issuer, 1)
    core.deliver(lag_report(core.settings.max_router_lag_ms + 1500))
    send(core, conn, "c1")
    # Answered in the same call, before any await: nothing queued, claimed or published.
    (error,) = [f.error for f in conn.frames if f.WhichOneof("kind") == "error"]
    assert (error.code, error.client_msg_id) == (E.ERROR_CODE_BUSY, "c1")
    assert error.retry_after_ms == core.settings.max_router_lag_ms + 1500
    assert core.sends.admission.inflight == 0 and not core.sends._inflight
    assert await bus.consumer(["im.messages"], "g").poll(10, 0.01) == []

    core.deliver(lag_report(5))  # the router caught up
    clock.advance(1.0)  # the rate limit refills one Send
    send(core, conn, "c1")  # the client's retry of the same frame
    await core.wait_background()
    assert answers(conn) == {"c1": "ack"}
    assert core.sends.admission.inflight == 0


async def test_sends_in_flight_are_counted_until_answered_or_dropped(setup):
    core, issuer, _bus, _kv = setup
    conn = await authed(core, issuer, 1)
    core.sends.admission.max_inflight = 2
    for cid in ("c1", "c2", "c3"):  # pipelined in one turn: the third finds two held
        send(core, conn, cid)
    assert core.sends.admission.inflight == 2
    await core.wait_background()
    assert answers(conn) == {"c1": "ack", "c2": "ack", "c3": "ERROR_CODE_BUSY"}
    assert core.sends.admission.inflight == 0

    other = await authed(core, issuer, 2)
    send(core, other, "q1")
    core.closed(other)  # closed before its Send was handled: the slot is given back
    await core.wait_background()
    assert core.sends.admission.inflight == 0
