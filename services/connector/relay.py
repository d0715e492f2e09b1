"""Signals (typing, presence): frames relayed to online devices, never stored, never
on the bus. A connector sends one to the connectors holding the target users' devices
(found through presence routes), and writes the ones it receives to its sockets.

Best effort throughout: a failure or a full lane loses a signal, never blocks or
fails anything else; every queue is bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from im.fanout import Lanes, devices_by_connector, rpc_code
from im.grpcutil import ChannelPool
from im.ports import Backends
from im.runtime import local_connectors
from im.v1 import connector_pb2, wire_pb2
from services.connector.conn import Conn, frame_payload

log = logging.getLogger("im.connector")

SIGNAL_LANE_DEPTH = 256  # Deliver calls of signals queued per remote connector
MAX_TARGET_USERS = 1000  # users one signal goes to at most (presence routes per call)

Deliver = Callable[[connector_pb2.DeliverRequest], connector_pb2.DeliverResponse]


@dataclass(slots=True)
class SignalStats:
    sent: int = 0  # signals handed to a connector (per connector)
    pushed: int = 0  # signal frames written to a device here
    dropped: int = 0  # lost to a full lane or an overloaded connector
    failures: int = 0  # Deliver calls or lookups that failed


class SignalRelay:
    def __init__(
        self,
        backends: Backends,
        channels: ChannelPool,
        connector_id: str,
        deliver_here: Deliver,
    ) -> None:
        self._backends = backends
        self._connector_id = connector_id
        self._deliver_here = deliver_here
        self.stats = SignalStats()
        self._lanes: Lanes[None] = Lanes(channels, self._answered, self._failed, self._dropped)

    async def send(
        self,
        user_ids: Iterable[int],
        typing: wire_pb2.Typing | None = None,
        presence: wire_pb2.Presence | None = None,
    ) -> int:
        """Relay one signal to every online device of these users; returns the number
        of connectors it was handed to."""
        users = list(dict.fromkeys(user_ids))[:MAX_TARGET_USERS]
        if not users:
            return 0
        routes = await self._backends.presence.routes(users)
        by_connector = devices_by_connector(users, routes)
        if not by_connector:
            return 0
        connectors = {c.connector_id: c for c in await self._backends.registry.connectors()}
        self._lanes.close_except(connectors)
        handed = 0
        for connector_id, targets in by_connector.items():
            signal = connector_pb2.SignalDelivery(targets=targets)
            if typing is not None:
                signal.typing.CopyFrom(typing)
            elif presence is not None:
                signal.presence.CopyFrom(presence)
            request = connector_pb2.DeliverRequest(signals=[signal])
            local = (
                self._deliver_here
                if connector_id == self._connector_id
                else local_connectors.get(connector_id)
            )
            if local is not None:
                local(request)  # same process: a plain call
            else:
                info = connectors.get(connector_id)
                if info is None:
                    continue  # gone: its devices are offline
                if not self._lanes.get(info, SIGNAL_LANE_DEPTH).offer(None, request):
                    continue
            handed += 1
        self.stats.sent += handed
        return handed

    async def _answered(
        self, connector_id: str, _item: None, result: connector_pb2.DeliverResponse
    ) -> None:
        return None  # nothing to retry: a signal that found nobody is simply gone

    def _failed(self, connector_id: str, exc: BaseException) -> None:
        self.stats.failures += 1
        log.debug("signal to %s failed: %s", connector_id, rpc_code(exc))

    def _dropped(self, connector_id: str) -> None:
        self.stats.dropped += 1

    async def idle(self) -> None:
        await self._lanes.idle()

    def close(self) -> None:
        self._lanes.close()


def push_signals(
    signals: Iterable[connector_pb2.SignalDelivery],
    by_device: dict[tuple[int, str], Conn],
) -> int:
    """Write relayed signals to the listed devices held here; the others are skipped
    (nothing is retried or reported missing). Returns the frames written."""
    pushed = 0
    for signal in signals:
        kind = signal.WhichOneof("kind")
        if kind == "typing":
            payload = frame_payload(typing=signal.typing)
        elif kind == "presence":
            payload = frame_payload(presence=signal.presence)
        else:
            continue  # a kind this connector does not know yet
        for target in signal.targets:
            conn = by_device.get((target.user_id, target.device_id))
            if conn is None or conn.closed or not conn.authed:
                continue
            conn.write(payload)
            pushed += 1
    return pushed
