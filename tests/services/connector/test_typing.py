"""Typing at the connector: checked, rate limited, relayed to the other members'
online devices (never stored, never on the bus)."""

from __future__ import annotations

import pytest

from im.v1 import group_pb2, wire_pb2
from services.connector.service import ConnectorCore
from tests.services.connector.helpers import (
    FakeDirectory,
    authed,
    group_service,
    memory_backends,
    send,
)

E = wire_pb2


def typing(core, conn, conv: str = "d:1:2", state: int = E.TYPING_STATE_STARTED, rid: int = 0):  # type: ignore[no-untyped-def]
    core.on_frame(
        conn,
        wire_pb2.Frame(request_id=rid, typing=wire_pb2.Typing(conversation_id=conv, state=state)),
    )


def typings(conn) -> list[wire_pb2.Typing]:  # type: ignore[no-untyped-def]
    return [f.typing for f in conn.frames if f.WhichOneof("kind") == "typing"]


async def test_typing_reaches_the_other_members_devices_with_user_and_expiry(setup):
    core, issuer, bus, _kv = setup
    alice = await authed(core, issuer, 1, "a1")
    bob_phone = await authed(core, issuer, 2, "phone")
    bob_laptop = await authed(core, issuer, 2, "laptop")
    typing(core, alice)
    typing(core, alice, state=E.TYPING_STATE_STOPPED)
    await core.wait_background()
    for conn in (bob_phone, bob_laptop):
        got = typings(conn)
        assert [(t.conversation_id, t.user_id, t.state) for t in got] == [
            ("d:1:2", 1, E.TYPING_STATE_STARTED),
            ("d:1:2", 1, E.TYPING_STATE_STOPPED),
        ]
        assert got[0].expires_in_ms == core.settings.typing_expiry_ms
    assert typings(alice) == []  # not echoed to the typist
    assert core.typing.stats.relayed == 2
    assert bus._logs == {}  # nothing published: typing is never on the bus


async def test_malformed_typing_is_refused_and_the_connection_stays(setup):
    core, issuer, *_ = setup
    alice = await authed(core, issuer, 1)
    typing(core, alice, conv="not-an-id", rid=4)
    assert alice.last("error").error.code == E.ERROR_CODE_INVALID_ARGUMENT
    assert alice.last("error").request_id == 4
    typing(core, alice, state=E.TYPING_STATE_UNSPECIFIED)
    assert alice.last("error").error.code == E.ERROR_CODE_INVALID_ARGUMENT
    assert not alice.was_closed


async def test_a_non_member_gets_forbidden_and_nobody_sees_it(setup):
    core, issuer, *_ = setup
    bob = await authed(core, issuer, 2)
    mallory = await authed(core, issuer, 3)
    typing(core, mallory, conv="d:1:2", rid=9)
    typing(core, mallory, conv="g:77", rid=10)
    await core.wait_background()
    errors = [f for f in mallory.frames if f.WhichOneof("kind") == "error"]
    assert [(f.request_id, f.error.code) for f in errors] == [
        (9, E.ERROR_CODE_FORBIDDEN),
        (10, E.ERROR_CODE_FORBIDDEN),
    ]
    assert not mallory.was_closed
    assert typings(bob) == []


async def test_typing_in_an_own_1to1_not_created_yet_is_dropped_quietly(setup):
    core, issuer, *_ = setup
    alice = await authed(core, issuer, 1)
    typing(core, alice, conv="d:1:5")
    await core.wait_background()
    assert "error" not in alice.kinds()


async def test_typing_over_its_rate_is_dropped_silently_and_sends_go_on(setup, clock):
    core, issuer, _bus, _kv = setup
    alice = await authed(core, issuer, 1)
    bob = await authed(core, issuer, 2)
    burst = core.settings.typing_burst
    for _ in range(burst + 3):
        typing(core, alice)
    send(core, alice, "c1")  # the Send budget is not the typing one
    await core.wait_background()
    assert len(typings(bob)) == burst
    assert core.typing.stats.rate_limited == 3
    assert "error" not in alice.kinds()
    assert alice.last("send_ack").send_ack.client_msg_id == "c1"
    clock.advance(1.0)  # the budget refills
    typing(core, alice)
    await core.wait_background()
    assert len(typings(bob)) == burst + 1


@pytest.fixture
async def grouped(keys, clock, tmp_path):  # type: ignore[no-untyped-def]
    """A connector whose authorizer asks a real group service (blocks, dissolution)."""
    async with group_service(tmp_path) as group:
        backends = memory_backends(clock)
        core = ConnectorCore(
            group.settings, backends, keys[1], clock=clock, directory=FakeDirectory()
        )
        try:
            yield core, keys[0], group.stub
        finally:
            await core.channels.close()


def refusals(conn) -> list[tuple[int, int, str]]:  # type: ignore[no-untyped-def]
    return [
        (f.request_id, f.error.code, f.error.message)
        for f in conn.frames
        if f.WhichOneof("kind") == "error"
    ]


async def test_typing_reaches_nobody_across_a_block_and_tells_the_blocked_nothing_new(grouped):
    core, issuer, stub = grouped
    await stub.GetOrCreateDirect(group_pb2.GetOrCreateDirectRequest(user_a=1, user_b=2))
    alice = await authed(core, issuer, 1)
    bob = await authed(core, issuer, 2)
    mallory = await authed(core, issuer, 3)
    typing(core, bob)
    await core.wait_background()
    assert len(typings(alice)) == 1  # before the block

    await stub.Block(group_pb2.BlockRequest(user_id=1, target_id=2))  # alice blocks bob
    core.authorizer.forget("d:1:2")  # what the block's membership event does
    typing(core, bob, rid=7)
    typing(core, alice, rid=8)  # the blocker may not type there either
    typing(core, mallory, rid=9)  # a stranger, for the words
    send(core, bob, "c1")
    await core.wait_background()
    assert len(typings(alice)) == 1 and typings(bob) == []
    # Answered as the blocked user's Send is, in the words a stranger gets: no sign of
    # the block.
    typed, sent = sorted(refusals(bob), reverse=True)  # the Typing's (7), the Send's (0)
    assert typed[:2] == (7, E.ERROR_CODE_FORBIDDEN)
    assert typed[2] == sent[2] == refusals(mallory)[0][2]
    assert "block" not in typed[2]
    assert refusals(alice)[0][:2] == (8, E.ERROR_CODE_FORBIDDEN)


async def test_typing_is_not_relayed_in_a_dissolved_group(grouped):
    core, issuer, stub = grouped
    made = await stub.CreateGroup(
        group_pb2.CreateGroupRequest(owner_id=1, name="team", member_ids=[2])
    )
    gid = made.conversation.conversation_id
    alice = await authed(core, issuer, 1)
    bob = await authed(core, issuer, 2)
    typing(core, alice, conv=gid)
    await core.wait_background()
    assert len(typings(bob)) == 1  # before the dissolution

    await stub.DissolveGroup(group_pb2.DissolveGroupRequest(conversation_id=gid, actor_id=1))
    core.authorizer.forget(gid)  # what the membership event does
    typing(core, alice, conv=gid, rid=5)
    await core.wait_background()
    assert len(typings(bob)) == 1
    assert refusals(alice) == [(5, E.ERROR_CODE_FORBIDDEN, f"{gid} is dissolved: it is read-only")]


async def test_typing_in_an_own_1to1_creates_no_conversation(grouped):
    core, issuer, stub = grouped
    alice = await authed(core, issuer, 1)
    typing(core, alice, conv="d:1:5")
    await core.wait_background()
    assert "error" not in alice.kinds()
    reply = await stub.CheckMember(group_pb2.CheckMemberRequest(conversation_id="d:1:5", user_id=1))
    assert not reply.is_member
