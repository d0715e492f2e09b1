"""Offline push: members none of whose devices got a stored message are handed to the
push port (``im.ports.PushNotifier``), unless they muted the conversation.

Delivery only calls ``offer`` (no I/O, bounded): the mute check (one group-service
call per round, for every conversation at once) and the notifier's own sending run
in a background task, so a slow group service or a hanging webhook never slows a
Deliver. Events (``application/vnd.im.*``) and the sender's own messages are never
pushed. What a full queue cannot take is dropped and counted.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass

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


def preview_of(message: wire_pb2.Message, chars: int) -> str:
    """The start of a text message; empty for anything else (an image has no text)."""
    if not message.content_type.startswith("text/"):
        return ""
    text = message.body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= chars else text[:chars].rstrip() + ELLIPSIS


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
        self._pending: collections.deque[tuple[wire_pb2.Message, list[int]]] = collections.deque()
        self._pending_users = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._idle = asyncio.Event()  # nothing pending, nothing being checked
        self._idle.set()

    def offer(self, message: wire_pb2.Message, user_ids: list[int]) -> None:
        """These members got none of ``message`` on any device. Never blocks."""
        users = [u for u in user_ids if u != message.sender_id]
        if not users or is_reserved(message.content_type):
            return
        self.stats.candidates += len(users)
        room = self.settings.push_queue_size - self._pending_users
        if room < len(users):
            self.stats.dropped += len(users) - max(room, 0)
            users = users[: max(room, 0)]
            if not users:
                return
        self._pending.append((message, users))
        self._pending_users += len(users)
        self._idle.clear()
        self._wake.set()

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
            try:
                await self._dispatch(taken)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.failed += sum(len(u) for _m, u in taken)
                log.warning("push: the mute check failed (%r); %d not pushed", exc, len(taken))

    async def _dispatch(self, taken: list[tuple[wire_pb2.Message, list[int]]]) -> None:
        muted = await self._muted(taken)
        notifications: list[PushNotification] = []
        for message, users in taken:
            quiet = muted.get(message.conversation_id, set())
            preview = (
                preview_of(message, self.settings.push_preview_chars)
                if self.settings.push_preview
                else None
            )
            for user_id in users:
                if user_id in quiet:
                    self.stats.muted += 1
                    continue
                notifications.append(
                    PushNotification(
                        user_id=user_id,
                        conversation_id=message.conversation_id,
                        msg_id=message.msg_id,
                        seq=message.seq,
                        sender_id=message.sender_id,
                        content_type=message.content_type,
                        server_ts=message.server_ts,
                        preview=preview,
                    )
                )
        if notifications:
            self.notifier.offer(notifications)

    async def _muted(self, taken: list[tuple[wire_pb2.Message, list[int]]]) -> dict[str, set[int]]:
        by_conv: dict[str, set[int]] = collections.defaultdict(set)
        for message, users in taken:
            by_conv[message.conversation_id].update(users)
        muted: dict[str, set[int]] = collections.defaultdict(set)
        for queries in _requests(by_conv):
            reply = await self._groups().MutedMembers(
                group_pb2.MemberSettingsMutedRequest(queries=queries), timeout=MUTED_RPC_TIMEOUT
            )
            for q in reply.muted:
                muted[q.conversation_id].update(q.user_ids)
        return muted


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
