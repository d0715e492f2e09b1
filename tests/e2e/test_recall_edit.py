"""Recall and edit end to end, in both modes: the events reach online members live
and in order, history shows the current state (new text with edited_at; recalled
without a body), an offline member syncs everything later, a group admin recalls
another member's message, and a stranger is refused."""

from __future__ import annotations

import pytest

from im import events
from im.client import ApiError, ImClient, apply_event, display_text
from im.v1 import wire_pb2
from tests.e2e.helpers import new_user, take_chat

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateway(target) -> str:  # type: ignore[no-untyped-def]
    return target.gateway


async def current(client: ImClient, conv: str) -> list[wire_pb2.Message]:
    """History without the group's system events (the role change of the setup)."""
    messages = (await client.gateway.history(conv)).messages
    return [m for m in messages if not events.is_group_event(m.content_type)]


def view_of(messages: list[wire_pb2.Message]) -> dict[int, wire_pb2.Message]:
    view: dict[int, wire_pb2.Message] = {}
    for m in messages:
        if not apply_event(view, m):
            view[m.msg_id] = wire_pb2.Message.FromString(m.SerializeToString())
    return view


async def test_edit_and_recall_reach_everyone_in_order_and_history_is_current(gateway):
    alice, bob, carol, dave, eve = [
        await new_user(gateway, n) for n in ("alice", "bob", "carol", "dave", "eve")
    ]
    clients = (alice, bob, carol, dave, eve)
    try:
        group = await alice.gateway.create_group("team", [bob.user_id, carol.user_id, dave.user_id])
        conv = group["conversation_id"]
        await alice.gateway.set_role(conv, bob.user_id, "admin")
        base = 1  # the role change is a system event of the group: it holds seq 1
        for c in (alice, bob, dave):
            await c.connect()  # carol stays offline; eve is no member
        live: list[wire_pb2.Message] = []

        # alice sends; bob receives it live.
        ack = await alice.send(conv, "hello tema")
        live += await take_chat(bob, 1)
        assert live[0].msg_id == ack.msg_id and live[0].body == b"hello tema"

        # alice edits it; bob gets the edit event live; history shows the new text.
        edit = await alice.edit(conv, ack.msg_id, "hello team")
        live += await take_chat(bob, 1)
        event = live[1]
        assert (event.seq, event.content_type, event.refers_to) == (
            base + 2,
            events.EDIT,
            ack.msg_id,
        )
        assert event.body == b"hello team" and str(event.msg_id) == edit["msg_id"]
        first = (await current(bob, conv))[0]
        assert first.body == b"hello team" and first.edited_at == event.server_ts > 0
        assert display_text(first) == "hello team (edited)"

        # alice recalls it; bob gets the recall event; history keeps the row, no body.
        recall = await alice.recall(conv, ack.msg_id)
        assert await alice.recall(conv, ack.msg_id) == recall  # a retry: the same event
        live += await take_chat(bob, 1)
        assert (live[2].seq, live[2].content_type, live[2].refers_to) == (
            base + 3,
            events.RECALL,
            ack.msg_id,
        )
        history = await current(bob, conv)
        assert [m.seq for m in history] == [base + 1, base + 2, base + 3]
        assert history[0].recalled and history[0].body == b""
        assert history[1].body == b""  # the edit's text is gone with the recall
        with pytest.raises(ApiError) as refused:
            await alice.edit(conv, ack.msg_id, "too late")
        assert (refused.value.status, refused.value.code) == (409, "already_recalled")

        # A group admin (bob) recalls another member's (dave's) message.
        dave_ack = await dave.send(conv, "oops, secret")
        live += await take_chat(bob, 1)
        await bob.recall(conv, dave_ack.msg_id)
        live += await take_chat(bob, 1)
        assert (live[4].sender_id, live[4].refers_to) == (bob.user_id, dave_ack.msg_id)

        # A stranger may do neither.
        for attempt in (eve.recall(conv, dave_ack.msg_id), eve.edit(conv, ack.msg_id, "x")):
            with pytest.raises(ApiError) as stranger:
                await attempt
            assert stranger.value.status == 403

        # The live view, with the events applied, is what history says.
        bob_view = view_of(live)
        assert [m.msg_id for m in bob_view.values()] == [ack.msg_id, dave_ack.msg_id]
        assert all(m.recalled and m.body == b"" for m in bob_view.values())

        # carol was offline: she syncs all five, in order, in their current state.
        await carol.connect()
        synced = await take_chat(carol, 5)
        assert [m.seq for m in synced] == [base + n for n in range(1, 6)]
        assert [m.content_type for m in synced] == [
            "text/plain",
            events.EDIT,
            events.RECALL,
            "text/plain",
            events.RECALL,
        ]
        assert b"secret" not in b"".join(m.body for m in synced)
        assert b"hello" not in b"".join(m.body for m in synced)
        carol_view = view_of(synced)
        assert [display_text(m) for m in carol_view.values()] == ["(message recalled)"] * 2
    finally:
        for c in clients:
            await c.close()
