"""The router links attachments to the conversations their owners sent them to, once
the message is stored: only the owner's messages link, only messages with
attachment_ids cost a call, and a failing link never fails the batch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from im.adapters.file_attachments import FileAttachmentStore
from im.attachments import new_attachment_id
from im.ports import AttachmentLink, BackendUnavailable
from im.v1 import bus_pb2, wire_pb2
from services.router.attachments import AttachmentLinker
from tests.services.router.harness import Harness, make_group, online


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def send(h: Harness, conv: str, sender: int, msg_id: int, *attachment_ids: str) -> None:
    message = wire_pb2.Message(
        msg_id=msg_id,
        conversation_id=conv,
        sender_id=sender,
        body=b"see attached",
        server_ts=1,
        attachment_ids=list(attachment_ids),
    )
    record = bus_pb2.InboundMessage(message=message).SerializeToString()
    await h.bus.publish(h.settings.topic_messages, conv, record)


async def upload(store: FileAttachmentStore, owner: int) -> str:
    meta = await store.put(new_attachment_id(), owner, "a.png", "image/png", chunks(b"x"), 10, 1)
    return meta.attachment_id


async def test_the_owners_message_links_another_senders_does_not(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    store = FileAttachmentStore(tmp_path / "attachments")
    h.router.linker = AttachmentLinker(store)
    conv = await make_group(h, 1, [2, 3])
    await online(h, 1, 2, 3)
    alices = await upload(store, owner=1)
    await send(h, conv, 1, 100, alices)
    await send(h, conv, 2, 101, alices)  # someone else passes alice's id along
    other = await make_group(h, 2, [3])
    await send(h, other, 2, 102, alices)
    await h.run_bus()
    assert await store.links(alices, 10) == {conv: 1}
    assert h.router.linker.stats.linked == 1 and h.router.linker.stats.refused == 2
    # The ids travel with the stored and delivered message.
    delivered = [d.message for r in h.connector.requests for d in r.deliveries]
    assert all(list(m.attachment_ids) == [alices] for m in delivered)
    await store.close()


class RecordingStore:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[AttachmentLink]] = []
        self.fail = fail

    async def link(self, links: list[AttachmentLink]) -> int:
        self.calls.append(links)
        if self.fail:
            raise BackendUnavailable("attachment store", "down")
        return len(links)


async def test_messages_without_attachments_cost_no_call(harness: Harness) -> None:
    h = harness
    recording = RecordingStore()
    h.router.linker = AttachmentLinker(recording)  # type: ignore[arg-type]
    await h.send("d:1:2", 1, 100)
    await h.send("d:1:2", 2, 101)
    await h.run_bus()
    assert recording.calls == []
    await send(h, "d:1:2", 1, 102, "a" * 22, "b" * 22)
    await h.send("d:1:2", 1, 103)
    await h.run_bus()
    assert [[(x.attachment_id, x.seq) for x in c] for c in recording.calls] == [
        [("a" * 22, 3), ("b" * 22, 3)]
    ]


async def test_a_failing_link_never_fails_the_batch(harness: Harness) -> None:
    h = harness
    h.router.linker = AttachmentLinker(RecordingStore(fail=True))  # type: ignore[arg-type]
    await online(h, 1, 2)
    await send(h, "d:1:2", 1, 100, "a" * 22)
    await h.run_bus()
    assert [m.msg_id for m in await h.router.store.history("d:1:2", 0, 10)] == [100]
    assert sorted(h.connector.delivered()) == [(1, 1), (2, 1)]
    assert h.router.linker.stats.failures == 1 and h.router.failing == 0


async def test_link_outcomes_are_metrics(harness: Harness) -> None:
    from services.router.metrics import families

    h = harness
    h.router.linker = AttachmentLinker(RecordingStore(fail=True))  # type: ignore[arg-type]
    await send(h, "d:1:2", 1, 100, "a" * 22)
    await h.run_bus()
    (links,) = [f for f in families(h.router, None) if f.name == "im_router_attachment_links"]
    values = {s.labels["outcome"]: s.value for s in links.samples}
    assert values == {"linked": 0, "refused": 0, "failed": 1}
