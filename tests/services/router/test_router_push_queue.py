"""The push dispatcher's queue on its own (no group service, no bus): what offline
members of a large group cost per batch, what a queued notification holds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from im.adapters.memory import MemoryBus, MemoryKV, MemoryRegistry
from im.config import Settings
from im.fanout import Audience
from im.grpcutil import ChannelPool
from im.ports import Backends
from im.v1 import group_pb2, wire_pb2
from services.router.delivery import Deliverer
from services.router.push import PushDispatcher
from tests.services.router.helpers import RecordingNotifier

CONV = "g:1"


class NobodyMuted:
    """The group service's mute check, answering "nobody" (the stub's shape)."""

    def __init__(self) -> None:
        self.calls = 0

    async def MutedMembers(self, request, timeout):  # type: ignore[no-untyped-def]
        self.calls += 1
        return group_pb2.MemberSettingsMutedResponse()


class Compared:
    """How many join seqs were compared: the work done per member."""

    count = 0


class Seq(int):
    """A join seq that counts its comparisons."""

    def __lt__(self, other: object) -> bool:
        Compared.count += 1
        return int(self) < other  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        Compared.count += 1
        return int(self) > other  # type: ignore[operator]

    def __le__(self, other: object) -> bool:
        Compared.count += 1
        return int(self) <= other  # type: ignore[operator]

    def __ge__(self, other: object) -> bool:
        Compared.count += 1
        return int(self) >= other  # type: ignore[operator]


class CountingMembers(dict[int, int]):
    """A member list (member id -> seq joined after) that counts how often it is read
    through."""

    reads = 0

    def items(self):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().values()

    def __iter__(self) -> Iterator[int]:
        self.reads += 1
        return super().__iter__()


class FixedMembers:
    """The member cache, answering one list for every conversation."""

    def __init__(self, joined: dict[int, int]) -> None:
        self.joined = joined

    async def audience(self, conversation_id: str) -> Audience:
        return Audience(self.joined)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def deliverer(settings: Settings, joined: dict[int, int], push: PushDispatcher) -> Deliverer:
    kv = MemoryKV()  # nobody is online
    backends = Backends(
        bus=MemoryBus(1),
        registry=MemoryRegistry(),
        presence=kv,
        sessions=kv,
        idempotency=kv,
        rate_limits=kv,
    )
    d = Deliverer(settings, backends, ChannelPool())
    d.members = FixedMembers(joined)  # type: ignore[assignment]
    d.push = push
    return d


def texts(count: int, sender: int = 1, body: bytes = b"hello") -> list[wire_pb2.Message]:
    return [
        wire_pb2.Message(
            msg_id=1000 + seq,
            conversation_id=CONV,
            seq=seq,
            sender_id=sender,
            content_type="text/plain",
            body=body,
        )
        for seq in range(1, count + 1)
    ]


def ids(messages: list[wire_pb2.Message]) -> set[int]:
    """What delivery is told it may push: the msg_ids a batch stored now."""
    return {m.msg_id for m in messages}


def large_group(members: int) -> CountingMembers:
    Compared.count = 0
    return CountingMembers({u: Seq(0) for u in range(1, members + 1)})


async def test_a_full_queue_costs_push_nothing_per_member(settings) -> None:  # type: ignore[no-untyped-def]
    push = PushDispatcher(settings, RecordingNotifier(), NobodyMuted)
    filler = wire_pb2.Message(msg_id=1, conversation_id="g:0", seq=1, sender_id=1)
    push.offer(filler, range(2, settings.push_queue_size + 2))  # the queue is full
    joined = large_group(10_000)
    messages = texts(500)
    await deliverer(settings, joined, push).deliver(messages, pushable=ids(messages))
    # Read once to look up the members' devices (delivery does, push or not); not
    # again for push, nor a join seq compared.
    assert joined.reads == 1 and Compared.count == 0
    # What was not taken is still counted: every member but the sender, per message.
    assert push.stats.dropped == 500 * 9_999


async def test_a_large_group_costs_one_pass_over_its_members_per_batch(settings) -> None:  # type: ignore[no-untyped-def]
    push = PushDispatcher(settings, RecordingNotifier(), NobodyMuted)
    joined = large_group(10_000)
    messages = texts(500)
    await deliverer(settings, joined, push).deliver(messages, pushable=ids(messages))
    assert joined.reads <= 2  # the devices' lookup, and push's own pass
    # One pass (and an ordering of an ordered list), then a bisection per message: not
    # one comparison per member and message (5 million).
    assert Compared.count < 3 * 10_000
    assert push.room() == 0
    assert (push.stats.candidates, push.stats.dropped) == (500 * 9_999, 500 * 9_999 - 10_000)


async def test_members_get_what_was_sent_after_they_joined_and_not_their_own(settings) -> None:  # type: ignore[no-untyped-def]
    notifier = RecordingNotifier()
    push = PushDispatcher(settings, notifier, NobodyMuted)
    # 1 joined at the start, 2 after seq 2, 3 after seq 3; 9 is online.
    joined = {1: 0, 2: 2, 3: 3, 9: 0}
    messages = texts(4, sender=2)
    d = deliverer(settings, joined, push)
    await d.backends.presence.connect(9, "dev9", "c1", 60)
    await push.start()
    try:
        await d.deliver(messages, pushable=ids(messages))
        await asyncio.wait_for(push.idle(), 10)
    finally:
        await push.close()
    assert sorted((n.user_id, n.seq) for n in notifier.got) == [
        (1, 1),
        (1, 2),
        (1, 3),
        (1, 4),
        (3, 4),  # 2 sent them: none for 2
    ]


async def test_a_queued_notification_holds_what_it_needs_not_the_message(settings) -> None:  # type: ignore[no-untyped-def]
    settings = settings.model_copy(update={"push_preview": True, "push_preview_chars": 5})
    notifier = RecordingNotifier()
    push = PushDispatcher(settings, notifier, NobodyMuted)
    (message,) = texts(1, body=b"first words" + b"x" * 32_000)
    push.offer(message, [2])
    held = [getattr(offer, name) for offer in push._pending for name in offer.__slots__]
    assert not any(isinstance(v, wire_pb2.Message) for v in held)
    message.body = b"changed afterwards"  # the queue took what it needed when offered
    await push.start()
    try:
        await asyncio.wait_for(push.idle(), 10)
    finally:
        await push.close()
    (note,) = notifier.got
    assert (note.user_id, note.msg_id, note.preview) == (2, message.msg_id, "first…")


async def test_a_recall_takes_back_what_waits_in_the_dispatcher(settings) -> None:  # type: ignore[no-untyped-def]
    notifier = RecordingNotifier()
    push = PushDispatcher(settings, notifier, NobodyMuted)
    recalled, kept = texts(2)
    push.offer(recalled, [2, 3])
    push.offer(kept, [2])
    push.withdraw({(CONV, recalled.msg_id)})
    assert push.room() == settings.push_queue_size - 1
    await push.start()
    try:
        await asyncio.wait_for(push.idle(), 10)
    finally:
        await push.close()
    assert [(n.user_id, n.msg_id) for n in notifier.got] == [(2, kept.msg_id)]
    assert push.stats.recalled == 2
    assert notifier.withdrawn == {(CONV, recalled.msg_id)}  # and whatever it queued


class SlowMuteCheck:
    """A mute check that answers when told to."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def MutedMembers(self, request, timeout):  # type: ignore[no-untyped-def]
        self.asked.set()
        await self.answer.wait()
        return group_pb2.MemberSettingsMutedResponse()


async def test_a_recall_during_the_mute_check_is_not_pushed(settings) -> None:  # type: ignore[no-untyped-def]
    notifier = RecordingNotifier()
    groups = SlowMuteCheck()
    push = PushDispatcher(settings, notifier, lambda: groups)  # type: ignore[arg-type, return-value]
    (message,) = texts(1)
    await push.start()
    try:
        push.offer(message, [2])
        await asyncio.wait_for(groups.asked.wait(), 10)  # taken from the queue
        push.withdraw({(CONV, message.msg_id)})
        groups.answer.set()
        await asyncio.wait_for(push.idle(), 10)
    finally:
        await push.close()
    assert notifier.got == []
    assert push.stats.recalled == 1
