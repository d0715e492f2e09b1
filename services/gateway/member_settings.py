"""A member's own settings of a conversation (mute, pin, archive, a name of its own):
stored by the group service, then told to every online device of the user, so its
other devices follow at once; an offline device reads them in GET /v1/conversations.

Telling the devices is best effort and bounded: the settings are stored when the
group service answers, and a device that misses the frame sees them in the list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable

from im.grpcutil import ChannelPool
from im.ports import Backends
from im.v1 import connector_pb2, connector_pb2_grpc, group_pb2, group_pb2_grpc, wire_pb2
from services.gateway.calls import Calls
from services.gateway.conversations import ConversationOps
from services.gateway.settings_models import SettingsPatch

log = logging.getLogger("im.gateway")

TELL_TIMEOUT = 3.0  # seconds for the whole fan-out to the user's connectors


def settings_frame(s: group_pb2.MemberSettings) -> wire_pb2.ConversationSettingsChanged:
    return wire_pb2.ConversationSettingsChanged(
        conversation_id=s.conversation_id,
        muted_until=s.muted_until,
        pinned=s.pinned,
        archived=s.archived,
        name=s.name,
        updated_at=s.updated_at,
    )


class SettingsOps:
    def __init__(
        self,
        groups: Callable[[], group_pb2_grpc.GroupServiceStub],
        conversations: ConversationOps,
        calls: Calls,
        backends: Backends,
        connector_pool: ChannelPool,
    ) -> None:
        self._groups = groups
        self._conversations = conversations
        self._calls = calls
        self._backends = backends
        self._pool = connector_pool

    async def update(
        self, me: int, conversation_id: str, patch: SettingsPatch
    ) -> group_pb2.MemberSettings:
        await self._conversations.require_member(conversation_id, me)
        request = group_pb2.MemberSettingsSetRequest(
            conversation_id=conversation_id,
            user_id=me,
            patch=patch.to_proto(int(time.time() * 1000)),
        )
        stored = (await self._calls.rpc(self._groups().SetMemberSettings, request)).settings
        try:
            await asyncio.wait_for(self._tell_devices(me, stored), TELL_TIMEOUT)
        except Exception as exc:  # stored already: devices that missed it read the list
            log.warning("could not tell user %d's devices of new settings: %r", me, exc)
        return stored

    async def _tell_devices(self, user_id: int, stored: group_pb2.MemberSettings) -> None:
        """Every online device of the user, the one that made the change included (the
        frame carries the full settings, so applying it twice changes nothing)."""
        routes = (await self._backends.presence.routes([user_id])).get(user_id, [])
        if not routes:
            return
        targets: dict[str, list[connector_pb2.DeviceRef]] = defaultdict(list)
        for route in routes:
            targets[route.connector_id].append(
                connector_pb2.DeviceRef(user_id=user_id, device_id=route.device_id)
            )
        live = {c.connector_id: c for c in await self._backends.registry.connectors()}
        change = settings_frame(stored)
        calls = []
        for connector_id, refs in targets.items():
            info = live.get(connector_id)
            if info is None:
                continue  # gone, and its connections with it
            stub = connector_pb2_grpc.ConnectorServiceStub(self._pool.get(info.grpc_addr))
            request = connector_pb2.DeliverRequest(
                settings_changes=[connector_pb2.SettingsChangeDelivery(change=change, targets=refs)]
            )
            calls.append(stub.Deliver(request, timeout=TELL_TIMEOUT))
        for result in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(result, BaseException):
                log.warning("settings change not delivered to a connector: %r", result)
