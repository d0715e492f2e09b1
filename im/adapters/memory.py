"""In-process adapters for standalone mode (one process, one event loop)."""

from __future__ import annotations

import asyncio
import zlib
from collections import defaultdict

from im.buspack import Packer, by_partition
from im.clock import Clock, SystemClock
from im.ports import BackendUnavailable, Backoff, BusRecord, ConnectorInfo, DeviceRoute, NodeLease

# --------------------------------------------------------------------------- bus


def partition_for(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


class MemoryBus:
    """Partitioned topics with consumer groups, like Kafka but in memory.

    Records are kept until the process exits; committed offsets per group make a
    consumer that closes and rejoins resume where its group left off.
    """

    def __init__(self, partitions: int = 8) -> None:
        self._partitions = partitions
        self._logs: dict[str, list[list[tuple[str, bytes]]]] = {}
        self._committed: dict[tuple[str, str, int], int] = defaultdict(int)
        self._members: dict[str, list[MemoryConsumer]] = defaultdict(list)
        self._new_data = asyncio.Event()
        self._closed = False

    def _log(self, topic: str) -> list[list[tuple[str, bytes]]]:
        log = self._logs.get(topic)
        if log is None:
            log = self._logs[topic] = [[] for _ in range(self._partitions)]
        return log

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        self._append(topic, key, value)

    async def publish_many(self, topic: str, records: list[tuple[str, bytes]]) -> None:
        for key, value in records:
            self._append(topic, key, value)

    async def publish_packed(
        self, topic: str, records: list[tuple[str, bytes]], pack: Packer
    ) -> None:
        for partition, key, value in by_partition(records, self._partition_of, pack):
            self._append(topic, key, value, partition)

    def _partition_of(self, key: str) -> int:
        return partition_for(key, self._partitions)

    def _append(self, topic: str, key: str, value: bytes, partition: int | None = None) -> None:
        if self._closed:
            raise BackendUnavailable("bus", "closed")
        if partition is None:
            partition = partition_for(key, self._partitions)
        self._log(topic)[partition].append((key, value))
        self._new_data.set()

    def consumer(self, topics: list[str], group: str, background: bool = False) -> MemoryConsumer:
        consumer = MemoryConsumer(self, list(topics), group)
        self._members[group].append(consumer)
        self._rebalance(group)
        return consumer

    def _leave(self, consumer: MemoryConsumer) -> None:
        members = self._members[consumer.group]
        if consumer in members:
            members.remove(consumer)
            self._rebalance(consumer.group)

    def _rebalance(self, group: str) -> None:
        members = self._members[group]
        for member in members:
            member._assign([])
        if not members:
            return
        topics = sorted({t for m in members for t in m.topics})
        slots = [(t, p) for t in topics for p in range(self._partitions)]
        for i, slot in enumerate(slots):
            members[i % len(members)]._assigned.append(slot)
        for member in members:
            member._reset_positions()

    async def healthy(self) -> bool:
        return not self._closed

    async def producer_ready(self) -> bool:
        return not self._closed

    @property
    def epoch(self) -> int:
        return 0  # it never loses what it accepted while the process lives

    async def close(self) -> None:
        self._closed = True
        self._new_data.set()


class MemoryConsumer:
    def __init__(self, bus: MemoryBus, topics: list[str], group: str) -> None:
        self._bus = bus
        self.topics = topics
        self.group = group
        self._assigned: list[tuple[str, int]] = []
        self._position: dict[tuple[str, int], int] = {}
        self._generation = 0
        self._closed = False

    def _assign(self, slots: list[tuple[str, int]]) -> None:
        self._assigned = list(slots)
        self._generation += 1

    def _reset_positions(self) -> None:
        self._position = {
            (t, p): self._bus._committed[(self.group, t, p)] for t, p in self._assigned
        }

    @property
    def generation(self) -> int:
        return self._generation

    def lag(self) -> dict[tuple[str, int], int]:
        """The queue depth of each assigned partition past this member's position."""
        out = {}
        for topic, partition in self._assigned:
            log = self._bus._logs.get(topic)
            end = len(log[partition]) if log is not None else 0
            out[(topic, partition)] = end - self._position.get((topic, partition), 0)
        return out

    @property
    def assigned(self) -> int:
        return 0 if self._closed else len(self._assigned)

    def _take(self, max_records: int) -> list[BusRecord]:
        out: list[BusRecord] = []
        for topic, partition in self._assigned:
            log = self._bus._log(topic)[partition]
            pos = self._position[(topic, partition)]
            while pos < len(log) and len(out) < max_records:
                key, value = log[pos]
                out.append(BusRecord(topic, partition, pos, key, value))
                pos += 1
            self._position[(topic, partition)] = pos
            if len(out) >= max_records:
                break
        return out

    async def poll(self, max_records: int, timeout: float) -> list[BusRecord]:
        if self._closed:
            return []
        records = self._take(max_records)
        if records:
            return records
        self._bus._new_data.clear()
        try:
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that
            # arrives as the event is set (busy bus), and the polling task never ends.
            async with asyncio.timeout(timeout):
                await self._bus._new_data.wait()
        except TimeoutError:
            return []
        return self._take(max_records)

    async def commit(self) -> None:
        for (topic, partition), pos in self._position.items():
            key = (self.group, topic, partition)
            self._bus._committed[key] = max(self._bus._committed[key], pos)

    async def rewind(self) -> None:
        self._reset_positions()

    async def close(self) -> None:
        self._closed = True
        self._bus._leave(self)


# -------------------------------------------------------------------- registry


class MemoryRegistry:
    """The registry of one process: every service of it shares this object, so what
    one writes the others see at once, and nothing outlives the process."""

    def __init__(self) -> None:
        self._entries: dict[str, ConnectorInfo] = {}
        self._routers: dict[str, bool] = {}
        # Node ids leased by the services of this process; nothing else can hold one.
        self._node_ids: set[int] = set()

    async def register(self, info: ConnectorInfo) -> None:
        self._entries[info.connector_id] = info

    async def update(self, info: ConnectorInfo) -> None:
        self._entries[info.connector_id] = info

    async def deregister(self, connector_id: str) -> None:
        self._entries.pop(connector_id, None)

    async def connectors(self) -> list[ConnectorInfo]:
        return list(self._entries.values())

    async def announce_router(self, router_id: str, serving: bool) -> None:
        self._routers[router_id] = serving

    async def withdraw_router(self, router_id: str) -> None:
        self._routers.pop(router_id, None)

    async def routers(self) -> dict[str, bool]:
        return dict(self._routers)

    async def lease_node_id(self, owner: str, limit: int) -> NodeLease:
        for node_id in range(limit):
            if node_id not in self._node_ids:
                self._node_ids.add(node_id)
                return NodeLease(node_id, owner)
        raise RuntimeError(f"all {limit} node ids are taken")

    def healthy(self) -> bool:
        return True  # in-process: there is no session to lose

    async def close(self) -> None:
        self._node_ids.clear()


# ------------------------------------------------------ presence, sessions, keys


SWEEP_EVERY = 30.0


class MemoryKV:
    """Presence, revoked sessions and idempotency keys, with TTLs, in one dict each."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        # user -> device -> (connector_id, expires_at)
        self._presence: dict[int, dict[str, tuple[str, float]]] = defaultdict(dict)
        self._revoked: dict[str, float] = {}
        self._keys: dict[str, tuple[bytes, float]] = {}
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window end, count)
        # key -> (failures, blocked until, forgotten at)
        self._failures: dict[str, tuple[int, float, float]] = {}
        self._next_sweep = 0.0

    def _now(self) -> float:
        return self._clock.monotonic()

    async def healthy(self) -> bool:
        return True

    async def instance(self) -> str:
        return "memory"  # lives and dies with the process that holds the presence

    def _sweep(self) -> None:
        # Expired entries are ignored on read; a full sweep every 30 s keeps memory
        # bounded without costing the hot path (a sweep per N writes did, at 100k keys).
        now = self._now()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY
        self._revoked = {k: t for k, t in self._revoked.items() if t > now}
        self._keys = {k: v for k, v in self._keys.items() if v[1] > now}
        self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
        self._failures = {k: v for k, v in self._failures.items() if v[2] > now}
        for user in list(self._presence):
            devices = {d: v for d, v in self._presence[user].items() if v[1] > now}
            if devices:
                self._presence[user] = devices
            else:
                del self._presence[user]

    # presence
    async def connect(
        self, user_id: int, device_id: str, connector_id: str, ttl: float
    ) -> str | None:
        self._sweep()
        devices = self._presence[user_id]
        previous = devices.get(device_id)
        devices[device_id] = (connector_id, self._now() + ttl)
        if previous is None or previous[1] <= self._now():
            return None
        return previous[0]

    async def disconnect(self, user_id: int, device_id: str, connector_id: str) -> None:
        devices = self._presence.get(user_id)
        if devices is None:
            return
        current = devices.get(device_id)
        if current is not None and current[0] == connector_id:
            del devices[device_id]
        if not devices:
            self._presence.pop(user_id, None)

    async def refresh(self, entries: list[tuple[int, str]], connector_id: str, ttl: float) -> None:
        now = self._now()
        for user_id, device_id in entries:
            devices = self._presence[user_id]
            held = devices.get(device_id)
            # A live entry of another connector: the device moved there.
            if held is None or held[0] == connector_id or held[1] <= now:
                devices[device_id] = (connector_id, now + ttl)

    async def routes(self, user_ids: list[int]) -> dict[int, list[DeviceRoute]]:
        now = self._now()
        out: dict[int, list[DeviceRoute]] = {}
        for user_id in user_ids:
            devices = self._presence.get(user_id)
            if not devices:
                continue
            live = [DeviceRoute(d, c) for d, (c, exp) in devices.items() if exp > now]
            if live:
                out[user_id] = live
        return out

    # sessions
    async def revoke(self, session_id: str, ttl: float) -> None:
        self._sweep()
        self._revoked[session_id] = self._now() + ttl

    async def is_revoked(self, session_id: str) -> bool:
        expires = self._revoked.get(session_id)
        return expires is not None and expires > self._now()

    # idempotency
    async def claim(self, key: str, value: bytes, ttl: float) -> bytes | None:
        self._sweep()
        now = self._now()
        existing = self._keys.get(key)
        if existing is not None and existing[1] > now:
            return existing[0]
        self._keys[key] = (value, now + ttl)
        return None

    async def claim_many(self, items: list[tuple[str, bytes]], ttl: float) -> list[bytes | None]:
        return [await self.claim(key, value, ttl) for key, value in items]

    async def release(self, key: str) -> None:
        self._keys.pop(key, None)

    # rate limits
    async def hit(self, key: str, limit: int, window: float) -> float:
        self._sweep()
        now = self._now()
        end, count = self._windows.get(key, (0.0, 0))
        if end <= now:
            end, count = now + window, 0
        count += 1
        self._windows[key] = (end, count)
        return 0.0 if count <= limit else end - now

    async def blocked(self, keys: list[str]) -> float:
        now = self._now()
        waits = [self._failures[k][1] - now for k in keys if k in self._failures]
        return max([0.0, *waits])

    async def fail(self, key: str, backoff: Backoff) -> float:
        self._sweep()
        now = self._now()
        count, _, forgotten_at = self._failures.get(key, (0, 0.0, 0.0))
        if forgotten_at <= now:
            count = 0
        count += 1
        wait = backoff.wait_after(count)
        self._failures[key] = (count, now + wait, now + wait + backoff.window)
        return wait

    async def forgive(self, key: str) -> None:
        self._failures.pop(key, None)
