"""Blocking and privacy settings as the caller manages them. The group service keeps
and enforces them; after a block or unblock a membership event for the pair's 1:1
conversation makes every connector and router drop what it cached about it, so the
next Send is checked afresh."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from im.config import Settings
from im.v1 import bus_pb2, group_pb2, group_pb2_grpc, user_pb2
from services.gateway.calls import Calls
from services.gateway.errors import ApiError


class PrivacyOps:
    """``gateway.privacy_ops``; ``me`` is always the calling user."""

    def __init__(
        self,
        settings: Settings,
        groups: Callable[[], group_pb2_grpc.GroupServiceStub],
        calls: Calls,
        get_user: Callable[[int], Awaitable[user_pb2.User]],
    ) -> None:
        self._settings = settings
        self._groups = groups
        self._calls = calls
        self._get_user = get_user

    async def block(self, me: int, user_id: int) -> None:
        await self._set_block(me, user_id, block=True)

    async def unblock(self, me: int, user_id: int) -> None:
        await self._set_block(me, user_id, block=False)

    async def _set_block(self, me: int, user_id: int, block: bool) -> None:
        if user_id == me:
            raise ApiError(422, "invalid_request", "you cannot block yourself")
        await self._get_user(user_id)  # 404 for nobody
        request = group_pb2.BlockRequest(user_id=me, target_id=user_id)
        rpc = self._groups().Block if block else self._groups().Unblock
        answer = await self._calls.rpc(rpc, request)
        if answer.changed:
            event = bus_pb2.MembershipEvent(conversation_id=answer.conversation_id)
            topic = self._settings.topic_membership
            await self._calls.publish(topic, answer.conversation_id, event)

    async def blocked(self, me: int) -> list[int]:
        """The users the caller blocked (never who blocked the caller)."""
        answer = await self._calls.rpc(
            self._groups().ListBlocks, group_pb2.ListBlocksRequest(user_id=me)
        )
        return list(answer.blocked_ids)

    async def is_blocked_by_me(self, me: int, user_id: int) -> bool:
        return user_id in await self.blocked(me)

    async def privacy(self, me: int) -> group_pb2.PrivacySettings:
        return await self._calls.rpc(
            self._groups().GetPrivacy, group_pb2.GetPrivacyRequest(user_id=me)
        )

    async def set_privacy(
        self, me: int, invites_from_contacts_only: bool
    ) -> group_pb2.PrivacySettings:
        request = group_pb2.PrivacySettings(
            user_id=me, invites_from_contacts_only=invites_from_contacts_only
        )
        return await self._calls.rpc(self._groups().SetPrivacy, request)
