"""Offline push: members none of whose devices got a stored message are handed to the
push port (``im.ports.PushNotifier``), unless they muted the conversation.

Delivery only offers (no I/O, bounded): the mute check (one group-service call per
round, for every conversation at once) and the notifier's own sending run in a
background task, so a slow group service or a hanging webhook never slows a Deliver.
Events (``application/vnd.im.*``) and the sender's own messages are never pushed.
What a full queue cannot take is dropped and counted; offering costs what the queue
takes, not the size of the group.

Only messages a batch stored for the first time are offered (the router's delivery
sees to it): a batch replayed after a rewind, an isolated retry or a rebalance pushes
nothing again. The price: a router that stops between storing a message and offering
it loses that push. Push is best effort; the message itself is stored and synced.
A recall takes back its message's notifications wherever they still wait (here, or in
the notifier's queue): with previews on, they would carry the recalled text.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterator, Mapping, Set
from dataclasses import dataclass
from itertools import islice

from im.config import Settings
from im.events import is_reserved
from im.ports import PushNotification, PushNotifier
from im.v1 import group_pb2, group_pb2_grpc, wire_pb2

log = logging.getLogger("im.router")

MUTED_RPC_TIMEOUT = 5.0
# Within the group service's limits per MutedMembers call.
MUTED_IDS_PER_CALL = 10_000
MUTED_QUERIES_PER_CALL = 500
ELLIPSIS = "…"


@dataclass(slots=True)
class DispatchStats:
    candidates: int = 0  # (member, message) pairs found offline
    muted: int = 0  # of those, skipped: the member muted the conversation
    dropped: int = 0  # the dispatcher's own queue was full
    failed: int = 0  # the mute check failed: not pushed
    recalled: int = 0  # taken back before they left: their message was recalled


def preview_of(message: wire_pb2.Message, chars: int) -> str:
    """The start of a text message; empty for anything else (an image has no text)."""
    if not message.content_type.startswith("text/"):
        return ""
    text = message.body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= chars else text[:chars].rstrip() + ELLIPSIS


@dataclass(slots=True)
class Offer:
    """A message's notification for some members: only what the notification needs (a
    queued message would hold its whole body, up to the message size limit)."""

    note: PushNotification  # user_id 0: each member's is made from it
    users: list[int]


class OfflineMembers:
    """A conversation's members with no online device, read once per batch and kept in
    the order they joined: those who may see a message (joined before it) are a
    prefix, so each message costs a bisection plus what the queue takes of it, not the
    member count."""

    def __init__(self, joined: Mapping[int, int], online: Collection[int]) -> None:
        self._joined = {u: j for u, j in joined.items() if u not in online}
        self._users = sorted(self._joined, key=self._joined.__getitem__)
        self._seqs = [self._joined[u] for u in self._users]

    def of(self, message: wire_pb2.Message) -> tuple[int, Iterator[int]]:
        """How many may see ``message``, the sender not counted; and them, lazily."""
        seen_by = bisect_left(self._seqs, message.seq)  # joined after an earlier seq
        sender = message.sender_id
        count = seen_by - int(self._joined.get(sender, message.seq) < message.seq)
        return count, (u for u in islice(self._users, seen_by) if u != sender)


class PushDispatcher:
    def __init__(
        self,
        settings: Settings,
        notifier: PushNotifier,
        groups: Callable[[], group_pb2_grpc.GroupServiceStub],
    ) -> None:
        self.settings = settings
        self.notifier = notifier
        self.stats = DispatchStats()
        self._groups = groups
        self._pending: collections.deque[Offer] = collections.deque()
        self._pending_users = 0
        # (conversation, msg_id) recalled while a round is between its mute check and
        # the notifier (None: no round is); what it took is no longer in the queue.
        self._recalled_in_round: set[tuple[str, int]] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._idle = asyncio.Event()  # nothing pending, nothing being checked
        self._idle.set()

    def room(self) -> int:
        """Member notifications the queue can still take."""
        return max(0, self.settings.push_queue_size - self._pending_users)

    def offer(self, message: wire_pb2.Message, user_ids: Collection[int]) -> None:
        """These members got none of ``message`` on any device. Never blocks."""
        users = [u for u in user_ids if u != message.sender_id]
        self._take(message, len(users), iter(users))

    def offer_offline(
        self,
        messages: list[wire_pb2.Message],
        joined: Mapping[int, int],
        online: Collection[int],
    ) -> None:
        """``messages`` of one conversation, to its members (member id -> seq they
        joined after) with no device in ``online``. The member list is read once at
        most: not at all while the queue is full."""
        messages = [m for m in messages if not is_reserved(m.content_type)]
        if not messages:
            return
        if not self.room():
            self._overflow(messages, joined, online)
            return
        offline = OfflineMembers(joined, online)
        for m in messages:
            count, users = offline.of(m)
            self._take(m, count, users)

    def _overflow(
        self, messages: list[wire_pb2.Message], joined: Mapping[int, int], online: Collection[int]
    ) -> None:
        """A full queue takes nothing: count what it was offered without reading the
        member list (those who joined after a message are counted too)."""
        offline = len(joined) - sum(1 for u in online if u in joined)
        for m in messages:
            sender_offline = m.sender_id in joined and m.sender_id not in online
            count = offline - int(sender_offline)
            self.stats.candidates += count
            self.stats.dropped += count

    def _take(self, message: wire_pb2.Message, count: int, users: Iterator[int]) -> None:
        """``count`` members, ``users`` yields them: as many as there is room for."""
        if count <= 0 or is_reserved(message.content_type):
            return
        self.stats.candidates += count
        room = self.room()
        if room < count:
            self.stats.dropped += count - room
        taken = list(islice(users, min(room, count)))
        if not taken:
            return
        self._pending.append(Offer(self._note(message), taken))
        self._pending_users += len(taken)
        self._idle.clear()
        self._wake.set()

    def _note(self, message: wire_pb2.Message) -> PushNotification:
        preview = None
        if self.settings.push_preview:
            preview = preview_of(message, self.settings.push_preview_chars)
        return PushNotification(
            user_id=0,
            conversation_id=message.conversation_id,
            msg_id=message.msg_id,
            seq=message.seq,
            sender_id=message.sender_id,
            content_type=message.content_type,
            server_ts=message.server_ts,
            preview=preview,
        )

    def withdraw(self, messages: Set[tuple[str, int]]) -> None:
        """These (conversation_id, msg_id) were recalled: their notifications that
        have not left yet are dropped, here and in the notifier's queue."""
        if not messages:
            return
        kept = [o for o in self._pending if _key(o.note) not in messages]
        if len(kept) < len(self._pending):
            users = sum(len(o.users) for o in kept)
            self.stats.recalled += self._pending_users - users
            self._pending = collections.deque(kept)
            self._pending_users = users
        if self._recalled_in_round is not None:
            self._recalled_in_round |= messages
        self.notifier.withdraw(messages)

    async def start(self) -> None:
        await self.notifier.start()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.notifier.close()

    async def idle(self) -> None:
        """Until what was offered is with the notifier (tests)."""
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            taken = list(self._pending)
            self._pending.clear()
            self._pending_users = 0
            self._recalled_in_round = set()
            try:
                await self._dispatch(taken)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.failed += sum(len(o.users) for o in taken)
                log.warning("push: the mute check failed (%r); %d not pushed", exc, len(taken))
            finally:
                self._recalled_in_round = None

    async def _dispatch(self, taken: list[Offer]) -> None:
        muted = await self._muted(taken)
        recalled = self._recalled_in_round or set()
        notifications: list[PushNotification] = []
        for offer in taken:
            note = offer.note
            if _key(note) in recalled:
                self.stats.recalled += len(offer.users)
                continue
            quiet = muted.get(note.conversation_id, set())
            for user_id in offer.users:
                if user_id in quiet:
                    self.stats.muted += 1
                    continue
                notifications.append(dataclasses.replace(note, user_id=user_id))
        if notifications:
            self.notifier.offer(notifications)

    async def _muted(self, taken: list[Offer]) -> dict[str, set[int]]:
        by_conv: dict[str, set[int]] = collections.defaultdict(set)
        for offer in taken:
            by_conv[offer.note.conversation_id].update(offer.users)
        muted: dict[str, set[int]] = collections.defaultdict(set)
        for queries in _requests(by_conv):
            reply = await self._groups().MutedMembers(
                group_pb2.MemberSettingsMutedRequest(queries=queries), timeout=MUTED_RPC_TIMEOUT
            )
            for q in reply.muted:
                muted[q.conversation_id].update(q.user_ids)
        return muted


def _key(note: PushNotification) -> tuple[str, int]:
    return note.conversation_id, note.msg_id


def _requests(
    by_conv: dict[str, set[int]],
) -> list[list[group_pb2.MemberSettingsMutedQuery]]:
    """The queries, in calls the group service accepts (bounded ids and queries)."""
    calls: list[list[group_pb2.MemberSettingsMutedQuery]] = [[]]
    ids_in_call = 0
    for conversation_id, users in by_conv.items():
        ordered = sorted(users)
        for start in range(0, len(ordered), MUTED_IDS_PER_CALL):
            chunk = ordered[start : start + MUTED_IDS_PER_CALL]
            full = len(calls[-1]) >= MUTED_QUERIES_PER_CALL
            if full or ids_in_call + len(chunk) > MUTED_IDS_PER_CALL:
                calls.append([])
                ids_in_call = 0
            calls[-1].append(
                group_pb2.MemberSettingsMutedQuery(conversation_id=conversation_id, user_ids=chunk)
            )
            ids_in_call += len(chunk)
    return [c for c in calls if c]
