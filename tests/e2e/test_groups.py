"""Group chat end to end, in both modes: standalone (one process) and distributed
(every service its own process on the real servers)."""

from __future__ import annotations

import asyncio

import pytest

from im import events
from im.client import ApiError, ImClient, SendError
from im.v1 import wire_pb2
from tests.e2e.helpers import (
    PASSWORD,
    new_user,
    next_receipt,
    same_user,
    take_messages,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateway(target) -> str:  # type: ignore[no-untyped-def]
    return target.gateway


async def group_of(owner: ImClient, *members: ImClient, name: str = "team") -> str:
    group = await owner.gateway.create_group(name, [m.user_id for m in members])
    return group["conversation_id"]


async def close_all(*clients: ImClient) -> None:
    for client in clients:
        await client.close()


async def test_group_message_pushed_to_online_members_and_synced_by_the_offline_one(gateway):
    alice, bob, carol = [await new_user(gateway, n) for n in ("alice", "bob", "carol")]
    try:
        conv = await group_of(alice, bob, carol)
        await alice.connect()
        await bob.connect()  # carol stays offline
        ack = await alice.send(conv, "hello group")
        (got,) = await take_messages(bob, 1)
        assert (got.msg_id, got.seq, got.sender_id) == (ack.msg_id, 1, alice.user_id)
        (echo,) = await take_messages(alice, 1)
        assert echo.msg_id == ack.msg_id

        await carol.connect()  # sync pulls what she missed, and advances her cursor
        (pulled,) = await take_messages(carol, 1)
        assert pulled.msg_id == ack.msg_id
        mine = {c["conversation_id"]: c for c in await carol.gateway.conversations()}[conv]
        assert mine["kind"] == "group" and mine["delivered_seq"] == 1 and mine["last_seq"] == 1
    finally:
        await close_all(alice, bob, carol)


async def test_read_count_goes_up_as_members_read_pushed_then_pulled(gateway):
    alice, bob, carol = [await new_user(gateway, n) for n in ("alice", "bob", "carol")]
    try:
        conv = await group_of(alice, bob, carol)
        for c in (alice, bob, carol):
            await c.connect()
        ack = await alice.send(conv, "read me")
        for c in (alice, bob, carol):
            await take_messages(c, 1)
        summary = await alice.gateway.receipts(conv, 1)
        assert (summary["read_count"], summary["unread_count"]) == (0, 2)

        readers: dict[int, int] = {}
        await bob.read(conv, 1)  # over the socket
        receipt = await next_receipt(alice)
        readers[receipt.reader_id] = receipt.read_seq
        assert readers == {bob.user_id: 1}
        await carol.gateway.read(conv, 1)  # over REST
        while len(readers) < 2:
            receipt = await next_receipt(alice)
            readers[receipt.reader_id] = max(readers.get(receipt.reader_id, 0), receipt.read_seq)
        assert sum(1 for s in readers.values() if s >= 1) == 2  # read_count 0 -> 1 -> 2

        # The sender goes offline right after sending; her message is read meanwhile;
        # she pulls the receipts after logging in again.
        second = await alice.send(conv, "read this while I am away")
        await alice.close()
        await take_messages(bob, 1)
        await bob.read(conv, 2)
        for _ in range(100):
            summary = await carol.gateway.receipts(conv, 2)
            if summary["read_count"] == 1:
                break
            await asyncio.sleep(0.1)
        again = ImClient(gateway)
        await again.login(alice.username, PASSWORD, "dev1")
        summary = await again.gateway.receipts(conv, 2)
        assert summary["sender_id"] == alice.user_id and second.msg_id
        assert (summary["read_count"], summary["unread_count"]) == (1, 1)
        assert summary["read_by"]["user_ids"] == [bob.user_id]
        assert summary["unread"]["user_ids"] == [carol.user_id]
        first = await again.gateway.receipts(conv, 1)
        assert (first["read_count"], first["unread_count"]) == (2, 0)
        assert ack.msg_id
        await again.close()
    finally:
        await close_all(alice, bob, carol)


async def test_removed_member_gets_nothing_more_and_cannot_send(gateway):
    alice, bob, carol = [await new_user(gateway, n) for n in ("alice", "bob", "carol")]
    try:
        conv = await group_of(alice, bob, carol)
        for c in (alice, bob, carol):
            await c.connect()
        await alice.send(conv, "before")
        for c in (alice, bob, carol):
            await take_messages(c, 1)
        await alice.gateway.remove_member(conv, bob.user_id)
        after = await alice.send(conv, "after")
        # carol is still in: she gets the removal's system event and the message...
        removed, got = await take_messages(carol, 2)
        assert removed.content_type == events.GROUP_MEMBER_REMOVED
        assert got.msg_id == after.msg_id
        with pytest.raises(AssertionError):  # ...bob does not
            await take_messages(bob, 1, timeout=2)
        with pytest.raises(SendError) as refused:
            await bob.send(conv, "let me back in")
        assert refused.value.code == wire_pb2.ERROR_CODE_FORBIDDEN
        with pytest.raises(ApiError) as denied:
            await bob.gateway.history(conv, 0, 10)
        assert denied.value.status == 403
    finally:
        await close_all(alice, bob, carol)


async def test_non_member_cannot_send_or_read(gateway):
    alice, bob, mallory = [await new_user(gateway, n) for n in ("alice", "bob", "mallory")]
    try:
        conv = await group_of(alice, bob)
        await mallory.connect()
        with pytest.raises(SendError) as refused:
            await mallory.send(conv, "hi")
        assert refused.value.code == wire_pb2.ERROR_CODE_FORBIDDEN
        with pytest.raises(ApiError) as denied:
            await mallory.gateway.history(conv, 0, 10)
        assert denied.value.status == 403
    finally:
        await close_all(alice, bob, mallory)


async def test_new_member_sees_messages_from_when_they_joined(gateway):
    alice, bob, dave = [await new_user(gateway, n) for n in ("alice", "bob", "dave")]
    try:
        conv = await group_of(alice, bob)
        await alice.connect()
        await bob.connect()
        await alice.send(conv, "old news")
        # A SendAck means the bus has it; the join boundary is its seq, so the join waits
        # until "old news" is numbered (bob got it), else it is numbered after dave joined.
        await take_messages(bob, 1)
        await alice.gateway.add_members(conv, [dave.user_id])
        await dave.connect()
        fresh = await alice.send(conv, "welcome dave")
        # The system event of his joining comes first (seq 2): he sees it too.
        added, got = await take_messages(dave, 2)
        assert (added.content_type, added.seq) == (events.GROUP_MEMBERS_ADDED, 2)
        assert (got.msg_id, got.seq) == (fresh.msg_id, 3)
        history = await dave.gateway.history(conv, 0, 10)
        assert [m.seq for m in history.messages] == [2, 3]
    finally:
        await close_all(alice, bob, dave)


async def test_two_devices_of_one_user_both_receive_and_see_each_others_sends(gateway):
    alice, bob = await new_user(gateway, "alice", "phone"), await new_user(gateway, "bob")
    desktop = await same_user(gateway, alice, "desktop")
    try:
        conv = await group_of(alice, bob)
        for c in (alice, desktop, bob):
            await c.connect()
        from_bob = await bob.send(conv, "to both of your devices")
        assert (await take_messages(alice, 1))[0].msg_id == from_bob.msg_id
        assert (await take_messages(desktop, 1))[0].msg_id == from_bob.msg_id
        from_phone = await alice.send(conv, "sent on my phone")
        assert (await take_messages(desktop, 1))[0].msg_id == from_phone.msg_id
        # Reading on the phone is pushed to the desktop as a receipt of her own.
        await alice.read(conv, 2)
        receipt = await next_receipt(desktop)
        assert (receipt.reader_id, receipt.read_seq) == (alice.user_id, 2)
    finally:
        await close_all(alice, desktop, bob)
