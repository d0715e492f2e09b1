"""The router's loop: take a batch from the bus, number and store its messages, apply
cursor reports, commit, then deliver messages and read receipts to the connectors
holding the members' devices.

The bus position is committed only after the store write (goim #134: committing
before storing lost messages on restart); delivery failures lose nothing because the
message waits in the store for sync.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field

import grpc

from im.config import Settings
from im.grpcutil import ChannelPool
from im.ids import parse_direct
from im.ports import Backends, BusConsumer, BusRecord, DeviceRoute, MessageStore
from im.runtime import local_connectors
from im.v1 import bus_pb2, connector_pb2, connector_pb2_grpc, group_pb2, group_pb2_grpc, wire_pb2
from services.router.sequencer import Sequencer

log = logging.getLogger("im.router")


@dataclass(slots=True)
class RouterStats:
    batches: int = 0
    stored: int = 0
    replayed: int = 0
    cursor_writes: int = 0
    cursor_reports: int = 0
    receipts: int = 0
    membership_events: int = 0
    pushed: int = 0
    rerouted: int = 0
    delivery_failures: int = 0


@dataclass(slots=True)
class Audience:
    """Who may receive a conversation's messages: member id -> seq they joined after."""

    joined: dict[int, int]
    version: int = 0


class MemberCache:
    """Members per conversation. A 1:1 id names both members; a group's list is cached
    and revalidated once per batch by its member_version (one small RPC that answers
    "unchanged" without the list), so a removed member gets nothing after removal."""

    def __init__(self, settings: Settings, channels: ChannelPool) -> None:
        self._settings = settings
        self._channels = channels
        self._groups: dict[str, Audience] = {}
        self.fetches = 0

    def forget(self, conversation_id: str) -> None:
        self._groups.pop(conversation_id, None)

    async def audience(self, conversation_id: str) -> Audience:
        pair = parse_direct(conversation_id)
        if pair is not None:
            return Audience(dict.fromkeys(pair, 0))
        cached = self._groups.get(conversation_id)
        stub = group_pb2_grpc.GroupServiceStub(self._channels.get(self._settings.group_addr()))
        reply = await stub.ListMemberIds(
            group_pb2.ListMemberIdsRequest(
                conversation_id=conversation_id,
                known_version=cached.version if cached else 0,
            ),
            timeout=10,
        )
        if reply.unchanged and cached is not None:
            return cached
        self.fetches += 1
        audience = Audience(
            dict(zip(reply.user_ids, reply.joined_seqs, strict=True)), reply.member_version
        )
        if len(self._groups) > 10_000:
            self._groups.clear()  # bounded memory; lists are fetched again when needed
        self._groups[conversation_id] = audience
        return audience


@dataclass(slots=True)
class Outbox:
    """What one connector gets in one Deliver call."""

    deliveries: list[connector_pb2.Delivery] = field(default_factory=list)
    receipts: list[connector_pb2.ReceiptDelivery] = field(default_factory=list)


class Router:
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        store: MessageStore,
        channels: ChannelPool | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.store = store
        self.channels = channels or ChannelPool()
        self.sequencer = Sequencer(store)
        self.members = MemberCache(settings, self.channels)
        self.stats = RouterStats()
        self.failing = 0  # consecutive failed batches; readiness reflects the real path
        self._delivering: asyncio.Task | None = None
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
                self.failing = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failing += 1
                # Nothing was committed for this batch: back off and take it again.
                log.exception("router batch failed; retrying from the last commit")
                await asyncio.sleep(1.0)
                await consumer.rewind()

    async def handle(self, records: list[BusRecord], consumer: BusConsumer | None) -> None:
        self.stats.batches += 1
        s = self.settings
        inbound: list[wire_pb2.Message] = []
        reports: list[bus_pb2.CursorReport] = []
        for record in records:
            try:
                if record.topic == s.topic_messages:
                    inbound.append(bus_pb2.InboundMessage.FromString(record.value).message)
                elif record.topic == s.topic_cursors:
                    reports.append(bus_pb2.CursorReport.FromString(record.value))
                elif record.topic == s.topic_membership:
                    event = bus_pb2.MembershipEvent.FromString(record.value)
                    self.members.forget(event.conversation_id)
                    self.stats.membership_events += 1
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
        # All of a batch's cursor moves are one write (many acks -> one update each).
        cursors: dict[tuple[str, int], list[int]] = {}
        for m in messages:
            _merge(cursors, m.conversation_id, m.sender_id, m.seq, m.seq)
        receipts: dict[tuple[str, int], int] = {}
        for r in reports:
            _merge(cursors, r.conversation_id, r.user_id, r.delivered_seq, r.read_seq)
            if r.read_seq:
                key = (r.conversation_id, r.user_id)
                receipts[key] = max(receipts.get(key, 0), r.read_seq)
        self.stats.cursor_reports += len(reports)

        if cursors:
            await self._write_cursors(cursors)
        # The bus position is committed once the batch's messages are stored and its
        # cursors written: a crash before this replays the batch (stored messages are
        # recognised by msg_id, cursors only move forward).
        if consumer is not None:
            await consumer.commit()
        # Delivery runs while the next batch is taken and stored: one delivery in
        # flight at a time, so batches still reach the connectors in bus order.
        if messages or receipts:
            await self.flush()
            self._delivering = asyncio.get_running_loop().create_task(
                self._deliver_quietly(messages, receipts)
            )

    async def flush(self) -> None:
        """Wait for the delivery in flight (tests, shutdown)."""
        if self._delivering is not None:
            await self._delivering
            self._delivering = None

    async def _write_cursors(self, cursors: dict[tuple[str, int], list[int]]) -> None:
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

    async def _deliver_quietly(
        self, messages: list[wire_pb2.Message], receipts: dict[tuple[str, int], int]
    ) -> None:
        # A failed delivery loses nothing (the messages are stored; devices sync), so
        # it must not fail the batch and make it replay.
        try:
            await self.deliver(messages, receipts)
        except Exception:
            self.stats.delivery_failures += 1
            log.exception("delivery of a batch failed; its messages wait for sync")

    # ---------------------------------------------------------------- delivery

    async def deliver(
        self, messages: list[wire_pb2.Message], receipts: dict[tuple[str, int], int] | None = None
    ) -> None:
        receipts = receipts or {}
        by_conv: dict[str, list[wire_pb2.Message]] = defaultdict(list)
        for m in messages:
            by_conv[m.conversation_id].append(m)
        conversations = list(dict.fromkeys([*by_conv, *(c for c, _ in receipts)]))
        audiences = dict(
            zip(
                conversations,
                await asyncio.gather(*(self._audience(c) for c in conversations)),
                strict=True,
            )
        )
        users = list({u for a in audiences.values() if a is not None for u in a.joined})
        routes = await self.backends.presence.routes(users) if users else {}

        plan: dict[str, Outbox] = defaultdict(Outbox)
        for conv, msgs in by_conv.items():
            audience = audiences[conv]
            if audience is not None:
                _plan_messages(plan, msgs, audience, routes)
        for (conv, reader), read_seq in receipts.items():
            audience = audiences[conv]
            if audience is None:
                continue
            # Everyone's devices, the reader's own included (multi-device: reading on
            # one device clears unread on the others). In very large groups only the
            # reader's devices: the others pull counts from the receipts endpoint.
            if len(audience.joined) <= self.settings.receipt_push_max_members:
                targets = list(audience.joined)
            else:
                targets = [reader]
            receipt = wire_pb2.Receipt(conversation_id=conv, reader_id=reader, read_seq=read_seq)
            _plan_receipt(plan, receipt, targets, routes)
            self.stats.receipts += 1

        missing = await self._send_plan(plan)
        if missing:
            # A route can be stale (the device moved, goim #230): look once more.
            fresh = await self.backends.presence.routes(list({u for u, _d, _m, _c in missing}))
            retry: dict[str, Outbox] = defaultdict(Outbox)
            seen: dict[tuple[str, int], connector_pb2.Delivery] = {}
            for user_id, device_id, message, old_connector in missing:
                for route in fresh.get(user_id, []):
                    if route.device_id == device_id and route.connector_id != old_connector:
                        key = (route.connector_id, id(message))
                        delivery = seen.get(key)
                        if delivery is None:
                            delivery = seen[key] = connector_pb2.Delivery(message=message)
                            retry[route.connector_id].deliveries.append(delivery)
                        delivery.targets.add(user_id=user_id, device_id=device_id)
                        self.stats.rerouted += 1
            if retry:
                await self._send_plan(retry)

    async def _audience(self, conversation_id: str) -> Audience | None:
        try:
            return await self.members.audience(conversation_id)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.NOT_FOUND:
                return None  # e.g. a receipt for a conversation that does not exist
            raise

    async def _send_plan(
        self, plan: dict[str, Outbox]
    ) -> list[tuple[int, str, wire_pb2.Message, str]]:
        if not plan:
            return []
        connectors = {c.connector_id: c for c in await self.backends.registry.connectors()}
        calls = []
        for connector_id, outbox in plan.items():
            info = connectors.get(connector_id)
            if info is None:
                continue  # connector gone: its devices are offline and will sync
            request = connector_pb2.DeliverRequest(
                deliveries=outbox.deliveries, receipts=outbox.receipts
            )
            local = local_connectors.get(connector_id)
            if local is not None:
                calls.append((connector_id, outbox, _now(local, request)))
                continue
            stub = connector_pb2_grpc.ConnectorServiceStub(self.channels.get(info.grpc_addr))
            calls.append((connector_id, outbox, stub.Deliver(request, timeout=5)))
        missing = []
        results = await asyncio.gather(*(c[2] for c in calls), return_exceptions=True)
        for (connector_id, outbox, _call), result in zip(calls, results, strict=True):
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
                for delivery in outbox.deliveries:
                    for t in delivery.targets:
                        if (t.user_id, t.device_id) in wanted:
                            missing.append((t.user_id, t.device_id, delivery.message, connector_id))
        return missing


async def _now(deliver, request):  # type: ignore[no-untyped-def]
    return deliver(request)


def _merge(
    cursors: dict[tuple[str, int], list[int]], conv: str, user: int, delivered: int, read: int
) -> None:
    entry = cursors.get((conv, user))
    if entry is None:
        cursors[(conv, user)] = [delivered, read]
    else:
        entry[0] = max(entry[0], delivered)
        entry[1] = max(entry[1], read)


def _devices_by_connector(
    user_ids: list[int], routes: dict[int, list[DeviceRoute]]
) -> dict[str, list[connector_pb2.DeviceRef]]:
    out: dict[str, list[connector_pb2.DeviceRef]] = defaultdict(list)
    for user_id in user_ids:
        for route in routes.get(user_id, ()):
            out[route.connector_id].append(
                connector_pb2.DeviceRef(user_id=user_id, device_id=route.device_id)
            )
    return out


def _plan_messages(
    plan: dict[str, Outbox],
    msgs: list[wire_pb2.Message],
    audience: Audience,
    routes: dict[int, list[DeviceRoute]],
) -> None:
    """Each message once per connector, with every device there that may see it.

    Work is proportional to the online devices, not the members: a 10,000-member
    group with a few hundred devices online costs a few hundred steps per message."""
    joined = audience.joined
    online = [
        (
            joined_seq,
            route.connector_id,
            connector_pb2.DeviceRef(user_id=uid, device_id=route.device_id),
        )
        for uid in routes.keys() & joined.keys()
        for joined_seq in (joined[uid],)
        for route in routes[uid]
    ]
    if not online:
        return
    latest_join = max(j for j, _c, _r in online)
    shared = _group_refs(online) if latest_join < msgs[0].seq else None
    for m in msgs:
        # Members who joined at or after this seq do not get it (nor its history).
        targets = shared or _group_refs([o for o in online if o[0] < m.seq])
        for connector_id, refs in targets.items():
            plan[connector_id].deliveries.append(connector_pb2.Delivery(message=m, targets=refs))


def _group_refs(
    online: list[tuple[int, str, connector_pb2.DeviceRef]],
) -> dict[str, list[connector_pb2.DeviceRef]]:
    out: dict[str, list[connector_pb2.DeviceRef]] = defaultdict(list)
    for _joined, connector_id, ref in online:
        out[connector_id].append(ref)
    return out


def _plan_receipt(
    plan: dict[str, Outbox],
    receipt: wire_pb2.Receipt,
    user_ids: list[int],
    routes: dict[int, list[DeviceRoute]],
) -> None:
    for connector_id, refs in _devices_by_connector(user_ids, routes).items():
        plan[connector_id].receipts.append(
            connector_pb2.ReceiptDelivery(receipt=receipt, targets=refs)
        )
