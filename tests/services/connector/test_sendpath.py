"""The send path when backends fail: every Send gets one answer, nothing stays in
flight, and a retry of the same client_msg_id is handled afresh."""

from __future__ import annotations

import asyncio

import grpc

from im import buspack
from im.adapters.memory import MemoryBus, MemoryKV
from im.ports import BackendUnavailable
from im.v1 import bus_pb2, wire_pb2
from tests.services.connector.helpers import authed, send

E = wire_pb2


def answers(conn) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """client_msg_id -> "ack" or the error code's name, for every answered Send."""
    out: dict[str, str] = {}
    for f in conn.frames:
        if f.WhichOneof("kind") == "send_ack":
            out[f.send_ack.client_msg_id] = "ack"
        elif f.WhichOneof("kind") == "error" and f.error.client_msg_id:
            out[f.error.client_msg_id] = E.ErrorCode.Name(f.error.code)
    return out


class FlakyClaims(MemoryKV):
    """Idempotency keys whose claim raises for the listed client_msg_ids, as often as
    listed (a batch's claims in one call, then one at a time: twice)."""

    def __init__(self, clock, failing: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
        super().__init__(clock)
        self.failing = dict(failing)
        self.calls = 0

    async def claim_many(self, items, ttl):  # type: ignore[no-untyped-def]
        self.calls += 1
        return await super().claim_many(items, ttl)

    async def claim(self, key: str, value: bytes, ttl: float) -> bytes | None:
        cid = key.split(":", 1)[1]
        if self.failing.get(cid, 0) > 0:
            self.failing[cid] -= 1
            raise BackendUnavailable("redis", "connection reset")
        return await super().claim(key, value, ttl)


async def test_a_claim_failure_mid_batch_answers_every_send(setup, clock):
    core, issuer, bus, _kv = setup
    conn = await authed(core, issuer, 1)
    claims = core.backends.idempotency = FlakyClaims(clock, {"c2": 2})
    for cid in ("c1", "c2", "c3"):  # pipelined: one batch, its claims in one call
        send(core, conn, cid)
    await core.wait_background()
    assert claims.calls == 1
    assert answers(conn) == {"c1": "ack", "c2": "ERROR_CODE_UNAVAILABLE", "c3": "ack"}
    assert not core.sends._inflight

    clock.advance(1.0)  # the rate limit refills one Send
    send(core, conn, "c2")  # the client's retry is handled afresh
    await core.wait_background()
    assert answers(conn)["c2"] == "ack"
    records = await bus.consumer(["im.messages"], "g").poll(10, 0.01)
    published = [
        bus_pb2.InboundMessage.FromString(value).message.client_msg_id
        for r in records
        for value in buspack.unpack(r.value)  # c1 and c3 went out as one record
    ]
    assert published == ["c1", "c3", "c2"]
    assert len(records) == 2


class BrokenBus:
    """A bus whose publish raises something no one planned for."""

    async def publish_packed(self, topic, records, pack):  # type: ignore[no-untyped-def]
        raise RuntimeError("unexpected")


async def test_an_unexpected_publish_error_answers_and_frees_the_client_msg_id(setup, clock):
    core, issuer, *_ = setup
    first = await authed(core, issuer, 1, "a")
    second = await authed(core, issuer, 1, "b")
    real_bus = core.backends.bus
    core.backends.bus = BrokenBus()
    send(core, first, "same")
    send(core, second, "same")  # the same message retried from another device meanwhile
    await core.wait_background()
    assert answers(first) == {"same": "ERROR_CODE_UNAVAILABLE"}
    assert answers(second) == {"same": "ERROR_CODE_UNAVAILABLE"}
    assert not core.sends._inflight

    core.backends.bus = real_bus
    send(core, first, "same")
    await core.wait_background()
    assert answers(first) == {"same": "ack"}


class FailingAuthorizer:
    def cached(self, user_id: int, conversation_id: str) -> None:
        return None

    async def may_send(self, user_id: int, conversation_id: str) -> bool:
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
        )


class CrashingAuthorizer(FailingAuthorizer):
    async def may_send(self, user_id: int, conversation_id: str) -> bool:
        raise KeyError("a bug")


async def test_an_authorization_failure_is_answered_per_send(setup):
    core, issuer, *_ = setup
    conn = await authed(core, issuer, 1)
    core.sends.authorizer = FailingAuthorizer()
    send(core, conn, "c1")
    await core.wait_background()
    core.sends.authorizer = CrashingAuthorizer()
    send(core, conn, "c2")
    await core.wait_background()
    assert answers(conn) == {"c1": "ERROR_CODE_UNAVAILABLE", "c2": "ERROR_CODE_UNAVAILABLE"}
    assert not conn.was_closed


class ForgetfulBus(MemoryBus):
    """A bus whose broker can come back without what it had acknowledged."""

    def __init__(self) -> None:
        super().__init__(partitions=2)
        self._epoch = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    def lose_everything(self) -> None:
        self._logs.clear()
        self._epoch += 1


async def test_acked_messages_are_published_again_when_the_bus_lost_them(setup, clock):
    core, issuer, *_ = setup
    bus = core.backends.bus = ForgetfulBus()
    conn = await authed(core, issuer, 1)
    send(core, conn, "before-1")
    send(core, conn, "before-2")
    await core.wait_background()
    bus.lose_everything()  # acked, then gone with the broker's memory
    clock.advance(1.0)
    send(core, conn, "after")
    await core.wait_background()
    records = await bus.consumer(["im.messages"], "g").poll(100, 0.01)
    cids = sorted(bus_pb2.InboundMessage.FromString(r.value).message.client_msg_id for r in records)
    # The lost ones again, under their msg_ids (the router stores each once).
    assert cids == ["after", "after", "before-1", "before-2"]


class StaleAckBus(ForgetfulBus):
    """Holds the publish after ``hold_next`` until ``release``, then acks it without
    writing it: what a broker that came back empty does with a batch from a producer
    id it has since given to another producer (it takes the batch for a duplicate)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_next = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.written = asyncio.Event()  # a publish was written

    async def publish_packed(self, topic, records, pack):  # type: ignore[no-untyped-def]
        if not self.hold_next:
            await super().publish_packed(topic, records, pack)
            self.written.set()
            return
        self.hold_next = False
        self.held.set()
        await self.release.wait()  # then "acked", never written


async def test_an_ack_that_crossed_the_loss_of_the_bus_is_published_again(setup):
    core, issuer, *_ = setup
    bus = core.backends.bus = StaleAckBus()
    alice = await authed(core, issuer, 1)
    bob = await authed(core, issuer, 2)
    send(core, alice, "warm-up")
    await core.wait_background()
    bus.hold_next = True
    send(core, alice, "stale")
    await bus.held.wait()
    bus.lose_everything()  # seen while "stale" is on its way
    bus.written.clear()
    send(core, bob, "fresh")  # lands first: its publish replays what was kept
    await bus.written.wait()
    bus.release.set()
    await core.wait_background()
    assert answers(alice) == {"warm-up": "ack", "stale": "ack"}
    records = await bus.consumer(["im.messages"], "g").poll(100, 0.01)
    cids = {bus_pb2.InboundMessage.FromString(r.value).message.client_msg_id for r in records}
    assert "stale" in cids  # published again: its ack may have been a false one


async def test_messages_older_than_the_window_are_not_kept(setup, clock):
    core, issuer, *_ = setup
    bus = core.backends.bus = ForgetfulBus()
    conn = await authed(core, issuer, 1)
    send(core, conn, "old")
    await core.wait_background()
    clock.advance(core.settings.replay_window_seconds + 1)
    bus.lose_everything()
    send(core, conn, "new")
    await core.wait_background()
    records = await bus.consumer(["im.messages"], "g").poll(100, 0.01)
    cids = [bus_pb2.InboundMessage.FromString(r.value).message.client_msg_id for r in records]
    assert "old" not in cids


async def test_a_send_with_a_reserved_content_type_is_refused(setup):
    """Events (recalls, edits) come only from the server: a client cannot forge one."""
    core, issuer, _bus, _kv = setup
    conn = await authed(core, issuer, 1)
    core.on_frame(
        conn,
        wire_pb2.Frame(
            send=wire_pb2.Send(
                client_msg_id="forged",
                conversation_id="d:1:2",
                content_type="application/vnd.im.recall",
            )
        ),
    )
    await core.wait_background()
    assert answers(conn) == {"forged": "ERROR_CODE_INVALID_ARGUMENT"}


async def test_a_client_msg_id_in_the_servers_key_space_is_refused(setup):
    """The server's own keys (recalls, edits, group events) start with "~": a client
    that took one first would make that event pass for a retry."""
    core, issuer, _bus, _kv = setup
    conn = await authed(core, issuer, 1)
    core.on_frame(
        conn,
        wire_pb2.Frame(
            send=wire_pb2.Send(client_msg_id="~recall:1", conversation_id="d:1:2", body=b"x")
        ),
    )
    await core.wait_background()
    assert answers(conn) == {"~recall:1": "ERROR_CODE_INVALID_ARGUMENT"}
    (error,) = [f.error for f in conn.frames if f.WhichOneof("kind") == "error"]
    assert "client_msg_id" in error.message
