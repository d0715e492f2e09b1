"""Online/offline of users, pushed as Presence frames to the online devices of their
1:1 peers when it changes, debounced.

Across devices and connectors: "online" is announced by whichever connector first
claims the user's announced-online key in the shared key store (an atomic claim, so
a second device or connector announces nothing); "offline" by the connector where
the user's last device went away, once ``presence_debounce_seconds`` later the
presence store still shows no online device of the user anywhere. A reconnect within
the debounce finds the key still claimed: no offline, and no online either.

The key is released before anything else of an offline that may fail, and the
last-seen time goes to the user service (SQL, durable in both modes) after the push,
best effort: a failing user service costs a last-seen time, never a user stuck
"online". An offline that finds too many announcements under way is put off, never
dropped, for the same reason. Users who hide their presence are never announced. The
debounce runs on the injectable clock through ``tick()``, one heap for the connector
(no task per user).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Protocol

from im.clock import Clock
from im.config import Settings
from im.grpcutil import ChannelPool
from im.ids import parse_direct
from im.ports import Backends
from im.v1 import group_pb2, group_pb2_grpc, user_pb2, user_pb2_grpc, wire_pb2
from services.connector.relay import SignalRelay

log = logging.getLogger("im.connector")

RPC_TIMEOUT = 5.0
ANNOUNCED_TTL = 24 * 3600.0  # an announced-online key outlives any crash by this much
VISIBILITY_TTL = 10.0  # seconds a user's hide setting is trusted without asking
MAX_INFLIGHT = 1000  # announcements under way here; past it onlines are dropped, offlines put off
RETRY_SECONDS = 1.0  # an offline that found no room is settled again this much later
MAX_VISIBILITY_CACHED = 100_000

Spawn = Callable[[Coroutine], asyncio.Task]


def announced_key(user_id: int) -> str:
    return f"presence-announced:{user_id}"


@dataclass(slots=True)
class PresenceStats:
    online: int = 0  # online announcements made here
    offline: int = 0
    debounced: int = 0  # offlines cancelled by a reconnect within the debounce
    dropped: int = 0  # onlines not announced: too many announcements under way
    deferred: int = 0  # offlines put off (not dropped): too many under way
    failures: int = 0


class PresenceNotifier:
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        directory: Directory,
        relay: SignalRelay,
        clock: Clock,
        spawn: Spawn,
    ) -> None:
        self._settings = settings
        self._backends = backends
        self._directory = directory
        self._relay = relay
        self._clock = clock
        self._spawn = spawn
        # user -> devices authenticated here (a device that never got AuthOk is none)
        self._devices: dict[int, set[str]] = {}
        # user -> (deadline, last seen ms) of a pending offline; the heap may hold
        # stale entries (cancelled or re-armed), skipped when they come due.
        self._pending: dict[int, tuple[float, int]] = {}
        self._heap: list[tuple[float, int]] = []
        self._visible: dict[int, tuple[bool, float]] = {}
        self._inflight = 0
        self.max_inflight = MAX_INFLIGHT
        self.stats = PresenceStats()

    # ------------------------------------------------------------ from the core

    def holds(self, user_id: int) -> bool:
        return user_id in self._devices

    def device_online(self, user_id: int, device_id: str) -> None:
        """A device of the user authenticated here."""
        devices = self._devices.setdefault(user_id, set())
        first_here = not devices
        devices.add(device_id)
        if not first_here:
            return  # another device of the user is here: nothing changed
        if self._pending.pop(user_id, None) is not None:
            self.stats.debounced += 1
            return  # back within the debounce: peers never heard of the offline
        self._start(self._announce_online(user_id))

    def device_gone(self, user_id: int, device_id: str) -> None:
        """A device of the user left this connector; the offline waits for the debounce."""
        devices = self._devices.get(user_id)
        if devices is None or device_id not in devices:
            return  # never authenticated here
        devices.discard(device_id)
        if devices:
            return
        del self._devices[user_id]
        deadline = self._clock.monotonic() + self._settings.presence_debounce_seconds
        self._arm(user_id, deadline, self._clock.wall_ms())

    def tick(self) -> None:
        """Settle the offlines whose debounce ended (as of clock.monotonic())."""
        now = self._clock.monotonic()
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, user_id = heapq.heappop(heap)
            pending = self._pending.get(user_id)
            if pending is None or pending[0] != deadline:
                continue  # cancelled by a reconnect, or re-armed later
            del self._pending[user_id]
            if user_id in self._devices:
                continue
            if self._inflight >= self.max_inflight:
                # Put off, never dropped: a dropped offline would leave the user's
                # announced-online key taken, so peers would see the user online and
                # the next real online would never be announced.
                self.stats.deferred += 1
                self._arm(user_id, now + RETRY_SECONDS, pending[1])
                continue
            self._start(self._settle_offline(user_id, pending[1]))

    def pending(self) -> int:
        return len(self._pending)

    def _arm(self, user_id: int, deadline: float, last_seen_ms: int) -> None:
        self._pending[user_id] = (deadline, last_seen_ms)
        heapq.heappush(self._heap, (deadline, user_id))

    # --------------------------------------------------------------- the work

    def _start(self, coro: Coroutine) -> None:
        if self._inflight >= self.max_inflight:
            coro.close()
            self.stats.dropped += 1
            return
        self._inflight += 1
        self._spawn(self._guarded(coro))

    async def _guarded(self, coro: Coroutine) -> None:
        try:
            await coro
        except Exception as exc:
            self.stats.failures += 1
            log.warning("presence announcement failed: %r", exc)
        finally:
            self._inflight -= 1

    async def _announce_online(self, user_id: int) -> None:
        idem = self._backends.idempotency
        if await idem.claim(announced_key(user_id), b"1", ANNOUNCED_TTL) is not None:
            return  # announced already (another device, or back within the debounce)
        self.stats.online += 1
        if await self.visible(user_id):
            frame = wire_pb2.Presence(
                user_id=user_id, online=True, last_seen_ms=self._clock.wall_ms()
            )
            await self._push(user_id, frame)

    async def _settle_offline(self, user_id: int, last_seen_ms: int) -> None:
        if await self._online_anywhere(user_id):
            self.stats.debounced += 1
            return  # a device of the user is online at another connector
        # Released first, before the calls that may fail: a key left taken would show the
        # user online to peers and swallow the next online.
        await self._backends.idempotency.release(announced_key(user_id))
        self.stats.offline += 1
        await self._best_effort("offline push", user_id, self._push_offline(user_id, last_seen_ms))
        # Best effort too (the directory's call has its deadline): a lost last-seen time
        # leaves the presence endpoint an older one until the next offline.
        await self._best_effort(
            "last seen", user_id, self._directory.record_last_seen(user_id, last_seen_ms)
        )
        # A device that connected between the look and the release found the key still
        # claimed and announced nothing: say it is online again.
        if await self._online_anywhere(user_id):
            await self._announce_online(user_id)

    async def _push_offline(self, user_id: int, last_seen_ms: int) -> None:
        if await self.visible(user_id):
            frame = wire_pb2.Presence(user_id=user_id, online=False, last_seen_ms=last_seen_ms)
            await self._push(user_id, frame)

    async def _best_effort(self, what: str, user_id: int, work: Coroutine) -> None:
        """A step whose failure must not stop the ones after it: counted and logged."""
        try:
            await work
        except Exception as exc:
            self.stats.failures += 1
            log.warning("presence: %s of user %d failed: %r", what, user_id, exc)

    async def _online_anywhere(self, user_id: int) -> bool:
        routes = await self._backends.presence.routes([user_id])
        return bool(routes.get(user_id))

    async def visible(self, user_id: int) -> bool:
        """The user's hide setting, cached for a few seconds."""
        now = self._clock.monotonic()
        hit = self._visible.get(user_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        visible = await self._directory.visible(user_id)
        if len(self._visible) > MAX_VISIBILITY_CACHED:
            self._visible.clear()
        self._visible[user_id] = (visible, now + VISIBILITY_TTL)
        return visible

    async def _push(self, user_id: int, frame: wire_pb2.Presence) -> None:
        peers = await self._directory.peers(user_id)
        if peers:
            await self._relay.send(peers, presence=frame)


class Directory(Protocol):
    """What presence needs from the user and group services."""

    async def visible(self, user_id: int) -> bool: ...

    async def peers(self, user_id: int) -> list[int]: ...

    async def record_last_seen(self, user_id: int, last_seen_ms: int) -> None: ...


class GrpcDirectory:
    def __init__(self, settings: Settings, channels: ChannelPool) -> None:
        self._settings = settings
        self._channels = channels

    def _users(self) -> user_pb2_grpc.UserServiceStub:
        return user_pb2_grpc.UserServiceStub(self._channels.get(self._settings.user_addr()))

    async def visible(self, user_id: int) -> bool:
        reply = await self._users().PresenceGetInfo(
            user_pb2.PresenceInfoRequest(user_ids=[user_id]), timeout=RPC_TIMEOUT
        )
        return reply.users[0].visible if reply.users else True

    async def record_last_seen(self, user_id: int, last_seen_ms: int) -> None:
        await self._users().PresenceRecordLastSeen(
            user_pb2.PresenceLastSeenRequest(user_id=user_id, last_seen_ms=last_seen_ms),
            timeout=RPC_TIMEOUT,
        )

    async def peers(self, user_id: int) -> list[int]:
        """The other user of each of this user's 1:1 conversations, but those with a
        block between them (either way): they get no presence of each other."""
        stub = group_pb2_grpc.GroupServiceStub(self._channels.get(self._settings.group_addr()))
        reply = await stub.ListUserConversations(
            group_pb2.ListUserConversationsRequest(user_id=user_id), timeout=RPC_TIMEOUT
        )
        peers = []
        for item in reply.conversations:
            pair = parse_direct(item.conversation.conversation_id)
            if pair is not None:
                peers.append(pair[1] if pair[0] == user_id else pair[0])
        if not peers:
            return []
        blocks = await stub.ListBlocks(
            group_pb2.ListBlocksRequest(user_id=user_id), timeout=RPC_TIMEOUT
        )
        blocked = set(blocks.blocked_ids) | set(blocks.blocked_by_ids)
        return [p for p in peers if p != user_id and p not in blocked]
