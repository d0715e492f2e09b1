"""Message search end to end, in both modes: standalone (SQLite FTS5) and distributed
(the MongoDB keyword index), over messages sent on real sockets."""

from __future__ import annotations

import uuid

import pytest

from im.client import ApiError, ImClient
from tests.e2e.helpers import new_user, take_chat, take_messages

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateway(target) -> str:  # type: ignore[no-untyped-def]
    return target.gateway


def word() -> str:
    """A word no other test (nor an earlier run on the same servers) has sent."""
    return "w" + uuid.uuid4().hex[:10]


def texts(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [hit.message.body.decode() for hit in page.hits]


async def test_both_members_find_a_message_strangers_do_not(gateway):
    alice, bob, mallory = [await new_user(gateway, n) for n in ("alice", "bob", "mallory")]
    try:
        conv = (await alice.gateway.direct_conversation(bob.user_id))["conversation_id"]
        await alice.connect()
        await bob.connect()
        secret = word()
        ack = await alice.send(conv, f"Meet me at the {secret.upper()} tonight")
        await take_messages(bob, 1)  # stored before it is delivered
        for client in (alice, bob):
            page = await client.gateway.search(secret)
            assert [h.message.msg_id for h in page.hits] == [ack.msg_id]
            hit = page.hits[0]
            assert hit.message.conversation_id == conv
            start, end = hit.highlights[0]
            assert hit.snippet[start:end] == secret.upper()
            scoped = await client.gateway.search(f"tonight {secret}", conversation_id=conv)
            assert len(scoped.hits) == 1
        assert (await mallory.gateway.search(secret)).hits == []
        with pytest.raises(ApiError) as refused:
            await mallory.gateway.search(secret, conversation_id=conv)
        assert refused.value.status == 403
    finally:
        for client in (alice, bob, mallory):
            await client.close()


async def test_a_later_member_does_not_find_earlier_messages(gateway):
    alice, bob, carol = [await new_user(gateway, n) for n in ("alice", "bob", "carol")]
    clients: list[ImClient] = [alice, bob, carol]
    try:
        gid = (await alice.gateway.create_group("team", [bob.user_id]))["conversation_id"]
        await alice.connect()
        await bob.connect()
        topic = word()
        await alice.send(gid, f"before carol: {topic}")
        await take_chat(bob, 1)
        await alice.gateway.add_members(gid, [carol.user_id])
        await alice.send(gid, f"after carol: {topic}")
        await take_chat(bob, 1)  # stored before it is delivered (carol's joining is not)
        assert texts(await bob.gateway.search(topic)) == [
            f"after carol: {topic}",
            f"before carol: {topic}",
        ]
        assert texts(await carol.gateway.search(topic)) == [f"after carol: {topic}"]
        assert texts(await carol.gateway.search(f"before {topic}", conversation_id=gid)) == []
        # Pages, newest first.
        first = await bob.gateway.search(topic, limit=1)
        assert texts(first) == [f"after carol: {topic}"] and first.next_cursor
        older = await bob.gateway.search(topic, cursor=first.next_cursor, limit=1)
        assert texts(older) == [f"before carol: {topic}"] and older.next_cursor is None
    finally:
        for client in clients:
            await client.close()
