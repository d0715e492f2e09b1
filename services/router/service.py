"""The router's loop: take a batch from the bus, number and store its messages, apply
cursor reports, commit, then deliver to the connectors holding the members' devices.

The bus position is committed only after the store write (goim #134: committing
before storing lost messages on restart); delivery failures lose nothing because the
message waits in the store for sync.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass

import grpc

from im.clock import Clock, SystemClock
from im.config import Settings
from im.grpcutil import ChannelPool
from im.ids import parse_direct
from im.ports import Backends, BusConsumer, BusRecord, DeviceRoute, MessageStore
from im.v1 import bus_pb2, connector_pb2, connector_pb2_grpc, group_pb2, group_pb2_grpc, wire_pb2
from services.router.sequencer import Sequencer

log = logging.getLogger("im.router")

MEMBERS_TTL = 30.0


@dataclass(slots=True)
class RouterStats:
    batches: int = 0
    stored: int = 0
    replayed: int = 0
    cursor_writes: int = 0
    cursor_reports: int = 0
    pushed: int = 0
    rerouted: int = 0
    delivery_failures: int = 0


class MemberCache:
    """Member ids per conversation. Direct conversations need no lookup: the id names
    both members. Groups are cached briefly."""

    def __init__(self, settings: Settings, channels: ChannelPool, clock: Clock) -> None:
        self._settings = settings
        self._channels = channels
        self._clock = clock
        self._groups: dict[str, tuple[list[int], float]] = {}

    def forget(self, conversation_id: str) -> None:
        self._groups.pop(conversation_id, None)

    async def members(self, conversation_id: str) -> list[int]:
        pair = parse_direct(conversation_id)
        if pair is not None:
            return list(pair)
        hit = self._groups.get(conversation_id)
        now = self._clock.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        stub = group_pb2_grpc.GroupServiceStub(self._channels.get(self._settings.group_addr()))
        reply = await stub.ListMemberIds(
            group_pb2.ListMemberIdsRequest(conversation_id=conversation_id), timeout=10
        )
        ids = list(reply.user_ids)
        self._groups[conversation_id] = (ids, now + MEMBERS_TTL)
        return ids


class Router:
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        store: MessageStore,
        clock: Clock | None = None,
        channels: ChannelPool | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.store = store
        self.clock = clock or SystemClock()
        self.channels = channels or ChannelPool()
        self.sequencer = Sequencer(store)
        self.members = MemberCache(settings, self.channels, self.clock)
        self.stats = RouterStats()
        self._generation = -1

    def _group(self) -> group_pb2_grpc.GroupServiceStub:
        return group_pb2_grpc.GroupServiceStub(self.channels.get(self.settings.group_addr()))

    async def run(self, consumer: BusConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                records = await consumer.poll(self.settings.router_batch_size, 0.5)
                if consumer.generation != self._generation:
                    self._generation = consumer.generation
                    self.sequencer.reset()
                if records:
                    await self.handle(records, consumer)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Nothing was committed for this batch: back off and take it again.
                log.exception("router batch failed; retrying from the last commit")
                await asyncio.sleep(1.0)
                await consumer.rewind()

    async def handle(self, records: list[BusRecord], consumer: BusConsumer | None) -> None:
        self.stats.batches += 1
        inbound: list[wire_pb2.Message] = []
        reports: list[bus_pb2.CursorReport] = []
        for record in records:
            try:
                if record.topic == self.settings.topic_messages:
                    inbound.append(bus_pb2.InboundMessage.FromString(record.value).message)
                elif record.topic == self.settings.topic_cursors:
                    reports.append(bus_pb2.CursorReport.FromString(record.value))
            except Exception:
                log.error(
                    "skipping undecodable record %s/%s@%s",
                    record.topic,
                    record.partition,
                    record.offset,
                )

        new, replayed = await self.sequencer.store(inbound) if inbound else ([], [])
        self.stats.stored += len(new)
        self.stats.replayed += len(replayed)
        messages = sorted(new + replayed, key=lambda m: (m.conversation_id, m.seq))

        # The sender has read its own message; members' acks and reads move forward.
        cursors: dict[tuple[str, int], list[int]] = {}
        for m in messages:
            _merge(cursors, m.conversation_id, m.sender_id, m.seq, m.seq)
        for r in reports:
            _merge(cursors, r.conversation_id, r.user_id, r.delivered_seq, r.read_seq)
        self.stats.cursor_reports += len(reports)
        if cursors:
            await self._group().UpdateCursors(
                group_pb2.UpdateCursorsRequest(
                    updates=[
                        group_pb2.CursorUpdate(
                            conversation_id=conv, user_id=uid, delivered_seq=d, read_seq=r
                        )
                        for (conv, uid), (d, r) in cursors.items()
                    ]
                ),
                timeout=10,
            )
            self.stats.cursor_writes += 1

        if consumer is not None:
            await consumer.commit()
        if messages:
            await self.deliver(messages)

    # ---------------------------------------------------------------- delivery

    async def deliver(self, messages: list[wire_pb2.Message]) -> None:
        by_conv: dict[str, list[wire_pb2.Message]] = defaultdict(list)
        for m in messages:
            by_conv[m.conversation_id].append(m)
        member_lists = await asyncio.gather(*(self.members.members(c) for c in by_conv))
        audience = {c: ids for c, ids in zip(by_conv, member_lists, strict=True)}
        users = list({u for ids in member_lists for u in ids})
        routes = await self.backends.presence.routes(users)
        plan = _plan(by_conv, audience, routes)
        missing = await self._send_plan(plan)
        if missing:
            # A route can be stale (the device moved, goim #230): look once more.
            fresh = await self.backends.presence.routes(list({u for u, _d, _m in missing}))
            retry: dict[str, dict[int, connector_pb2.Delivery]] = defaultdict(dict)
            for user_id, device_id, message in missing:
                for route in fresh.get(user_id, []):
                    if route.device_id == device_id and route.connector_id != message[1]:
                        delivery = retry[route.connector_id].setdefault(
                            id(message[0]), connector_pb2.Delivery(message=message[0])
                        )
                        delivery.targets.add(user_id=user_id, device_id=device_id)
                        self.stats.rerouted += 1
            if retry:
                await self._send_plan({c: list(d.values()) for c, d in retry.items()})

    async def _send_plan(
        self, plan: dict[str, list[connector_pb2.Delivery]]
    ) -> list[tuple[int, str, tuple[wire_pb2.Message, str]]]:
        if not plan:
            return []
        connectors = {c.connector_id: c for c in await self.backends.registry.connectors()}
        calls = []
        for connector_id, deliveries in plan.items():
            info = connectors.get(connector_id)
            if info is None:
                continue  # connector gone: its devices are offline and will sync
            stub = connector_pb2_grpc.ConnectorServiceStub(self.channels.get(info.grpc_addr))
            calls.append(
                (
                    connector_id,
                    deliveries,
                    stub.Deliver(connector_pb2.DeliverRequest(deliveries=deliveries), timeout=5),
                )
            )
        missing = []
        results = await asyncio.gather(*(c[2] for c in calls), return_exceptions=True)
        for (connector_id, deliveries, _call), result in zip(calls, results, strict=True):
            if isinstance(result, BaseException):
                self.stats.delivery_failures += 1
                if isinstance(result, grpc.RpcError):
                    log.warning("deliver to %s failed: %s", connector_id, result.code())
                else:
                    log.warning("deliver to %s failed: %r", connector_id, result)
                continue
            self.stats.pushed += result.pushed
            if result.missing:
                wanted = {(t.user_id, t.device_id) for t in result.missing}
                for delivery in deliveries:
                    for t in delivery.targets:
                        if (t.user_id, t.device_id) in wanted:
                            missing.append(
                                (t.user_id, t.device_id, (delivery.message, connector_id))
                            )
        return missing


def _merge(
    cursors: dict[tuple[str, int], list[int]], conv: str, user: int, delivered: int, read: int
) -> None:
    entry = cursors.get((conv, user))
    if entry is None:
        cursors[(conv, user)] = [delivered, read]
    else:
        entry[0] = max(entry[0], delivered)
        entry[1] = max(entry[1], read)


def _plan(
    by_conv: dict[str, list[wire_pb2.Message]],
    audience: dict[str, list[int]],
    routes: dict[int, list[DeviceRoute]],
) -> dict[str, list[connector_pb2.Delivery]]:
    """One Deliver call per connector, carrying every message for its devices."""
    plan: dict[str, list[connector_pb2.Delivery]] = defaultdict(list)
    for conv, msgs in by_conv.items():
        per_connector: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for user_id in audience[conv]:
            for route in routes.get(user_id, ()):
                per_connector[route.connector_id].append((user_id, route.device_id))
        for connector_id, targets in per_connector.items():
            refs = [connector_pb2.DeviceRef(user_id=u, device_id=d) for u, d in targets]
            for m in msgs:
                plan[connector_id].append(connector_pb2.Delivery(message=m, targets=refs))
    return plan
