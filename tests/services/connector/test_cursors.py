"""Acks and reads on their way to the bus: validated, coalesced, rate-limited, and
nothing published for a conversation the user is not in."""

from __future__ import annotations

from im.v1 import bus_pb2, wire_pb2
from services.connector.cursors import MAX_SEQ, MAX_UNVERIFIED
from tests.services.connector.helpers import authed, deliver_request

E = wire_pb2


def read(core, conn, conv: str, seq: int, request_id: int = 0) -> None:  # type: ignore[no-untyped-def]
    core.on_frame(
        conn,
        wire_pb2.Frame(request_id=request_id, read=wire_pb2.Read(conversation_id=conv, seq=seq)),
    )


def ack(core, conn, conv: str, seq: int) -> None:  # type: ignore[no-untyped-def]
    core.on_frame(
        conn, wire_pb2.Frame(deliver_ack=wire_pb2.DeliverAck(conversation_id=conv, seq=seq))
    )


async def published(bus) -> list[bus_pb2.CursorReport]:  # type: ignore[no-untyped-def]
    records = await bus.consumer(["im.cursors"], "test").poll(100_000, 0.01)
    return [bus_pb2.CursorReport.FromString(r.value) for r in records]


def errors(conn) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return [
        (E.ErrorCode.Name(f.error.code), f.request_id)
        for f in conn.frames
        if f.WhichOneof("kind") == "error"
    ]


async def test_a_strangers_read_is_refused_and_never_published(setup):
    core, issuer, bus, _kv = setup
    stranger = await authed(core, issuer, 3)
    read(core, stranger, "d:1:2", 5, request_id=41)
    await core.wait_background()
    assert errors(stranger) == [("ERROR_CODE_FORBIDDEN", 41)]
    assert not stranger.was_closed
    await core.flush_cursor_reports()
    assert await published(bus) == []


async def test_an_out_of_range_seq_is_clamped_to_int64(setup):
    core, issuer, bus, _kv = setup
    member = await authed(core, issuer, 2)
    read(core, member, "d:1:2", (1 << 64) - 1)
    await core.wait_background()
    await core.flush_cursor_reports()
    (report,) = await published(bus)
    assert (report.user_id, report.read_seq) == (2, MAX_SEQ)


async def test_a_malformed_conversation_is_an_invalid_argument(setup):
    core, issuer, *_ = setup
    conn = await authed(core, issuer, 2)
    read(core, conn, "x" * 500, 1, request_id=7)
    ack(core, conn, "", 1)
    assert errors(conn) == [("ERROR_CODE_INVALID_ARGUMENT", 7), ("ERROR_CODE_INVALID_ARGUMENT", 0)]
    assert not conn.was_closed


async def test_a_read_flood_costs_batched_lookups_and_errors_only_to_its_sender(setup):
    core, issuer, bus, _kv = setup
    attacker = await authed(core, issuer, 3, "evil")
    honest = await authed(core, issuer, 2, "phone")
    for i in range(5000):
        read(core, attacker, f"g:{900_000 + i}", 1)
    read(core, honest, "d:1:2", 4)
    await core.wait_background()
    # The lookups were batched (one call for everything queued meanwhile), and what
    # did not fit in the queue or the rate was refused at once.
    lookups = core.authorizer.lookups
    assert sum(len(batch) for batch in lookups if batch != ["d:1:2"]) == MAX_UNVERIFIED
    assert len(lookups) <= 3
    codes = [code for code, _ in errors(attacker)]
    assert len(codes) == 5000
    assert set(codes) == {"ERROR_CODE_RATE_LIMITED", "ERROR_CODE_FORBIDDEN"}
    assert not attacker.was_closed
    await core.flush_cursor_reports()
    assert [(r.user_id, r.conversation_id, r.read_seq) for r in await published(bus)] == [
        (2, "d:1:2", 4)
    ]


async def test_the_rate_counts_new_conversations_not_frames(setup, clock):
    core, issuer, bus, _kv = setup
    conn = await authed(core, issuer, 2)
    core.deliver(deliver_request(1))  # d:1:2 delivered here: a known membership
    for seq in range(1, 20_001):  # an eager client acking every message
        ack(core, conn, "d:1:2", seq)
    assert errors(conn) == []
    assert core.authorizer.lookups == []  # delivered here, so no lookup either
    await core.flush_cursor_reports()
    (report,) = await published(bus)
    assert report.delivered_seq == 20_000


async def test_lookups_that_fail_are_answered_unavailable(setup):
    core, issuer, *_ = setup

    class Down:
        def cached(self, user_id: int, conversation_id: str) -> None:
            return None

        async def members_of(self, user_id: int, conversation_ids: list[str]) -> set[str]:
            raise TimeoutError

    core.cursors.authorizer = Down()
    conn = await authed(core, issuer, 2)
    read(core, conn, "d:1:2", 3, request_id=9)
    await core.wait_background()
    assert errors(conn) == [("ERROR_CODE_UNAVAILABLE", 9)]
    assert not conn.was_closed
