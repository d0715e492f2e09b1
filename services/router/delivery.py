"""Delivery: who may see a conversation's messages (cached member lists), where their
devices are (presence), and one Deliver call per connector per batch.

A failed delivery loses nothing (the messages are stored; devices sync), so nothing
here fails a batch. A route looked up a moment ago can be stale (the device moved):
the connector says which devices it no longer holds, and they are looked up once
more; the router never fans out to every connector.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Set
from dataclasses import dataclass, field

import grpc

from im.clock import Clock, SystemClock
from im.config import Settings
from im.events import RECALL
from im.fanout import Audience, Lane, Lanes, MemberCache, devices_by_connector, rpc_code
from im.grpcutil import ChannelPool
from im.metrics import Distribution
from im.ports import Backends, ConnectorInfo, DeviceRoute
from im.runtime import local_connectors
from im.v1 import connector_pb2, wire_pb2
from services.router.push import PushDispatcher

log = logging.getLogger("im.router")

__all__ = ["Audience", "Deliverer", "DeliveryStats", "MemberCache"]

LANE_DEPTH = 64  # Deliver calls queued per connector before newer ones are dropped
# (user, device, message, connector that did not hold the device)
Missing = tuple[int, str, wire_pb2.Message, str]


@dataclass(slots=True)
class DeliveryStats:
    pushed: int = 0
    receipts: int = 0
    rerouted: int = 0
    delivery_failures: int = 0
    dropped: int = 0  # outboxes a lagging connector's lane had no room for
    # Seconds from a message's server_ts (its SendAck) to its Deliver being handed to
    # a connector, per message and connector.
    seconds: Distribution = field(default_factory=Distribution)


@dataclass(slots=True)
class Outbox:
    """What one connector gets in one Deliver call."""

    deliveries: list[connector_pb2.Delivery] = field(default_factory=list)
    receipts: list[connector_pb2.ReceiptDelivery] = field(default_factory=list)
    # msg_ids that may be pushed to a member the connector no longer holds.
    pushable: Set[int] = frozenset()


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        channels: ChannelPool,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.channels = channels
        self.clock = clock or SystemClock()
        self.members = MemberCache(settings, channels)
        self.stats = DeliveryStats()
        self._lanes: Lanes[Outbox] = Lanes(
            channels, self._lane_answered, self._lane_failed, self._lane_dropped
        )
        self._router_id = settings.resolved_router_id()
        self.push: PushDispatcher | None = None  # offline push, when configured

    async def deliver(
        self,
        messages: list[wire_pb2.Message],
        receipts: dict[tuple[str, int], int] | None = None,
        lag_ms: int | None = None,
        traces: dict[int, str] | None = None,
        pushable: Set[int] = frozenset(),
    ) -> None:
        """``lag_ms``: how far behind the router is, told to the connectors (which
        refuse Sends while it is too far); None when this batch does not tell.
        ``traces``: msg_id -> traceparent of the router's span, for the Deliveries.
        ``pushable``: the msg_ids this batch stored for the first time, the only ones
        offered to offline members (a replay delivers again, it does not push again)."""
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

        plan = self._plan(by_conv, receipts, audiences, routes, traces)
        if self.push is not None:
            pushable = _take_back_recalled(self.push, messages, pushable)
            for outbox in plan.values():
                outbox.pushable = pushable
            if pushable:
                _offer_offline(self.push, by_conv, audiences, routes, pushable)
        missing = await self._send_plan(plan, lag_ms)
        if missing:
            await self.reroute(missing, pushable)

    def _plan(
        self,
        by_conv: dict[str, list[wire_pb2.Message]],
        receipts: dict[tuple[str, int], int],
        audiences: dict[str, Audience | None],
        routes: dict[int, list[DeviceRoute]],
        traces: dict[int, str] | None = None,
    ) -> dict[str, Outbox]:
        plan: dict[str, Outbox] = defaultdict(Outbox)
        for conv, msgs in by_conv.items():
            audience = audiences[conv]
            if audience is not None:
                _plan_messages(plan, msgs, audience, routes, traces)
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

        return plan

    async def reroute(self, missing: list[Missing], pushable: Set[int] = frozenset()) -> None:
        """A route can be stale (the device moved since): look once more, and send to
        where the device is now; otherwise the message waits for its sync (and the
        member is pushed, for the msg_ids in ``pushable``)."""
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
        if self.push is not None and pushable:
            # Not at any device the presence knows of now: the member is offline.
            gone: dict[int, tuple[wire_pb2.Message, set[int]]] = {}
            for user_id, _device, message, _old in missing:
                if message.msg_id in pushable and not fresh.get(user_id):
                    gone.setdefault(id(message), (message, set()))[1].add(user_id)
            for message, users in gone.values():
                self.push.offer(message, sorted(users))
        if retry:
            await self._send_plan(retry)

    async def _audience(self, conversation_id: str) -> Audience | None:
        try:
            return await self.members.audience(conversation_id)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.NOT_FOUND:
                return None  # e.g. a receipt for a conversation that does not exist
            raise

    async def _send_plan(self, plan: dict[str, Outbox], lag_ms: int | None = None) -> list[Missing]:
        """Hands each connector its outbox: a local one (same process) at once, a
        remote one through its lane. Returns the targets a local connector did not
        hold; remote lanes reroute theirs themselves."""
        if not plan:
            return []
        connectors = {c.connector_id: c for c in await self.backends.registry.connectors()}
        self._close_lanes_except(connectors)
        missing: list[Missing] = []
        for connector_id, outbox in plan.items():
            info = connectors.get(connector_id)
            if info is None:
                continue  # connector gone: its devices are offline and will sync
            request = connector_pb2.DeliverRequest(
                deliveries=outbox.deliveries,
                receipts=outbox.receipts,
            )
            if lag_ms is not None:
                request.router_lag_ms = min(lag_ms, 2**32 - 1)
                request.router_id = self._router_id
            local = local_connectors.get(connector_id)
            if local is not None:
                missing += self.accept(connector_id, outbox, local(request))
            else:
                self._lane(info).offer(outbox, request)
        return missing

    def accept(
        self, connector_id: str, outbox: Outbox, result: connector_pb2.DeliverResponse
    ) -> list[Missing]:
        """Count a connector's answer; the targets it no longer holds."""
        self.stats.pushed += result.pushed
        if outbox.deliveries:
            now_ms = self.clock.wall_ms()
            observe = self.stats.seconds.observe
            for delivery in outbox.deliveries:
                observe((now_ms - delivery.message.server_ts) / 1000)
        if not result.missing:
            return []
        wanted = {(t.user_id, t.device_id) for t in result.missing}
        return [
            (t.user_id, t.device_id, delivery.message, connector_id)
            for delivery in outbox.deliveries
            for t in delivery.targets
            if (t.user_id, t.device_id) in wanted
        ]

    def _lane(self, info: ConnectorInfo) -> Lane[Outbox]:
        return self._lanes.get(info, LANE_DEPTH)

    def _close_lanes_except(self, live: dict[str, ConnectorInfo]) -> None:
        self._lanes.close_except(live)  # queued outboxes of a gone connector wait for sync

    async def _lane_answered(
        self, connector_id: str, outbox: Outbox, result: connector_pb2.DeliverResponse
    ) -> None:
        missing = self.accept(connector_id, outbox, result)
        if missing:
            await self.reroute(missing, outbox.pushable)

    def _lane_failed(self, connector_id: str, exc: BaseException) -> None:
        self.stats.delivery_failures += 1
        log.warning("deliver to %s failed: %s", connector_id, rpc_code(exc))

    def _lane_dropped(self, connector_id: str) -> None:
        # The connector is far behind or gone: its devices get these by sync.
        self.stats.dropped += 1
        log.warning("connector %s is %d batches behind: dropping one", connector_id, LANE_DEPTH)

    async def idle(self) -> None:
        """Until every lane has sent what it was given (tests, shutdown)."""
        await self._lanes.idle()

    def close(self) -> None:
        self._lanes.close()


def _plan_messages(
    plan: dict[str, Outbox],
    msgs: list[wire_pb2.Message],
    audience: Audience,
    routes: dict[int, list[DeviceRoute]],
    traces: dict[int, str] | None = None,
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
        parent = traces.get(m.msg_id, "") if traces else ""
        for connector_id, refs in targets.items():
            delivery = connector_pb2.Delivery(message=m, targets=refs)
            if parent:
                delivery.traceparent = parent
            plan[connector_id].deliveries.append(delivery)


def _offer_offline(
    push: PushDispatcher,
    by_conv: dict[str, list[wire_pb2.Message]],
    audiences: dict[str, Audience | None],
    routes: dict[int, list[DeviceRoute]],
    stored: Set[int],
) -> None:
    """Members with no online device, per message stored now that they may see."""
    for conv, msgs in by_conv.items():
        audience = audiences.get(conv)
        new = [m for m in msgs if m.msg_id in stored]
        if audience is not None and new:
            push.offer_offline(new, audience.joined, routes)


def _take_back_recalled(
    push: PushDispatcher, messages: list[wire_pb2.Message], pushable: Set[int]
) -> Set[int]:
    """The recalls among ``messages`` take back their messages' notifications that
    still wait; returns ``pushable`` without the messages recalled in this batch."""
    recalled = {(m.conversation_id, m.refers_to) for m in messages if m.content_type == RECALL}
    if not recalled:
        return pushable
    push.withdraw(recalled)
    return pushable - {msg_id for _conv, msg_id in recalled}


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
    for connector_id, refs in devices_by_connector(user_ids, routes).items():
        plan[connector_id].receipts.append(
            connector_pb2.ReceiptDelivery(receipt=receipt, targets=refs)
        )
