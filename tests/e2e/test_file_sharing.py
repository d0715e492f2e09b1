"""Attachments end to end, in both modes: alice uploads a file and sends a message
referring to it; bob (in the conversation) downloads the same bytes; carol (not in
it) gets 404; mallory referring to alice's attachment in a message of hers shares
nothing; once alice recalls her message, bob gets 404 too."""

from __future__ import annotations

import hashlib
import os

import pytest

from im.client import ApiError, ImClient, SendError
from tests.e2e.helpers import new_user, take_messages

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateway(target) -> str:  # type: ignore[no-untyped-def]
    return target.gateway


async def close_all(*clients: ImClient) -> None:
    for client in clients:
        await client.close()


async def refused(client: ImClient, attachment_id: str) -> None:
    with pytest.raises(ApiError) as caught:
        await client.gateway.download(attachment_id)
    assert caught.value.status == 404
    with pytest.raises(ApiError) as caught:
        await client.gateway.attachment(attachment_id)
    assert caught.value.status == 404


async def test_a_member_downloads_what_the_owner_sent_and_others_cannot(gateway, tmp_path):
    alice, bob, carol, mallory = [
        await new_user(gateway, n) for n in ("alice", "bob", "carol", "mallory")
    ]
    try:
        data = os.urandom(700_000)  # several chunks of every store
        path = tmp_path / "holiday photo.jpg"
        path.write_bytes(data)
        up = await alice.gateway.upload_file(path)
        attachment_id = up["attachment_id"]
        assert up["size"] == len(data) and up["sha256"] == hashlib.sha256(data).hexdigest()
        assert (up["content_type"], up["filename"]) == ("image/jpeg", "holiday photo.jpg")

        direct = (await alice.gateway.direct_conversation(bob.user_id))["conversation_id"]
        await alice.connect()
        await bob.connect()
        ack = await alice.send(direct, "look!", attachment_ids=[attachment_id])
        (got,) = await take_messages(bob, 1)
        assert got.msg_id == ack.msg_id and list(got.attachment_ids) == [attachment_id]
        # The link is made before delivery: bob can fetch it as soon as he is told.
        assert await bob.gateway.download(attachment_id) == data
        saved = tmp_path / "saved.jpg"
        assert await bob.gateway.download_to(attachment_id, saved) == len(data)
        assert saved.read_bytes() == data
        assert (await bob.gateway.attachment(attachment_id))["owner_id"] == alice.user_id
        (stored,) = (await bob.gateway.history(direct)).messages
        assert list(stored.attachment_ids) == [attachment_id]

        await refused(carol, attachment_id)  # in no conversation it was sent to

        # mallory passes alice's id on to carol: carol sees the id, not the file.
        to_carol = (await mallory.gateway.direct_conversation(carol.user_id))["conversation_id"]
        await mallory.connect()
        await carol.connect()
        await mallory.send(to_carol, "stolen?", attachment_ids=[attachment_id])
        (passed,) = await take_messages(carol, 1)
        assert list(passed.attachment_ids) == [attachment_id]
        await refused(carol, attachment_id)
        await refused(mallory, attachment_id)
    finally:
        await close_all(alice, bob, carol, mallory)


async def test_a_recalled_message_shares_its_attachment_no_more(gateway):
    alice, bob = [await new_user(gateway, n) for n in ("alice", "bob")]
    try:
        up = await alice.gateway.upload_bytes(b"not for long", "note.txt")
        attachment_id = up["attachment_id"]
        direct = (await alice.gateway.direct_conversation(bob.user_id))["conversation_id"]
        await alice.connect()
        await bob.connect()
        ack = await alice.send(direct, "oops", attachment_ids=[attachment_id])
        await take_messages(bob, 1)
        assert await bob.gateway.download(attachment_id) == b"not for long"
        await alice.recall(direct, ack.msg_id)
        # The router applies the recall before it delivers the event.
        (event,) = await take_messages(bob, 1)
        assert event.refers_to == ack.msg_id
        await refused(bob, attachment_id)
        assert await alice.gateway.download(attachment_id) == b"not for long"
    finally:
        await close_all(alice, bob)


async def test_malformed_or_too_many_ids_are_refused_at_send(gateway):
    alice, bob = [await new_user(gateway, n) for n in ("alice", "bob")]
    try:
        direct = (await alice.gateway.direct_conversation(bob.user_id))["conversation_id"]
        await alice.connect()
        with pytest.raises(SendError) as caught:
            await alice.send(direct, "x", attachment_ids=["../../etc/passwd"])
        assert "malformed attachment id" in str(caught.value)
        up = await alice.gateway.upload_bytes(b"hello", "hello.txt")
        with pytest.raises(SendError):
            await alice.send(direct, "x", attachment_ids=[up["attachment_id"]] * 2)
    finally:
        await close_all(alice, bob)


async def test_uploads_outside_the_allowlist_or_too_large_are_refused(gateway, tmp_path):
    alice = await new_user(gateway, "alice")
    try:
        with pytest.raises(ApiError) as caught:
            await alice.gateway.upload_bytes(b"<script>", "x.html", "text/html")
        assert (caught.value.status, caught.value.code) == (415, "unsupported_media_type")
        most = (await alice.gateway.attachment_limits())["max_bytes"]
        big = tmp_path / "big.bin"
        with big.open("wb") as out:  # sparse: no need to write the bytes
            out.truncate(most + 1)
        with pytest.raises(ApiError) as caught:
            await alice.gateway.upload_file(big)
        assert (caught.value.status, caught.value.code) == (413, "payload_too_large")
    finally:
        await alice.close()
