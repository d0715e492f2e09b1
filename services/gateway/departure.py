"""A deleted account leaves its groups (the admin API's delete, ``admin.py``), as a
deactivated Synapse account leaves its rooms: member lists, member counts and "read
by N" stop counting it. Its messages stay (or are erased, as the operator asked).

A group it owns goes first to its longest-standing admin, else member; one it is
alone in is dissolved. Each step is the ordinary lifecycle operation, in the deleted
user's name, so every device sees the system events ("deleted:7 made bob the owner",
"deleted:7 left") in the group's seq stream. Safe to repeat: a second run finds only
the groups the first did not leave."""

from __future__ import annotations

import logging
from collections.abc import Callable

from im.v1 import group_pb2, group_pb2_grpc
from services.gateway.calls import Calls
from services.gateway.errors import ApiError
from services.gateway.groups import GroupOps
from services.gateway.lifecycle import GroupLifecycleOps

log = logging.getLogger("im.gateway")

_GROUP = group_pb2.CONVERSATION_KIND_GROUP
_OWNER = group_pb2.MEMBER_ROLE_OWNER
_ADMIN = group_pb2.MEMBER_ROLE_ADMIN


def successor(members: list[group_pb2.Member], leaving: int) -> int | None:
    """Who owns a group after its owner ``leaving``: the admin who joined first, else
    the member who joined first (None: nobody else is in it)."""
    others = [m for m in members if m.user_id != leaving]
    if not others:
        return None
    first = min(others, key=lambda m: (m.role != _ADMIN, m.joined_at, m.user_id))
    return first.user_id


class GroupDepartures:
    def __init__(
        self,
        groups: Callable[[], group_pb2_grpc.GroupServiceStub],
        group_ops: GroupOps,
        lifecycle: GroupLifecycleOps,
        calls: Calls,
    ) -> None:
        self._groups = groups
        self._ops = group_ops
        self._lifecycle = lifecycle
        self._calls = calls

    async def leave_all(self, user_id: int) -> int:
        """Takes ``user_id`` out of every group it is in (dissolved ones stay: they
        change no more). Returns how many it left or dissolved. A group that fails is
        logged and the others go on; the first failure is raised at the end, for the
        operator to repeat the delete."""
        request = group_pb2.ListUserConversationsRequest(user_id=user_id)
        listed = await self._calls.rpc(self._groups().ListUserConversations, request)
        done, failure = 0, None
        for item in listed.conversations:
            conversation = item.conversation
            if conversation.kind != _GROUP or conversation.dissolved:
                continue
            try:
                await self._leave(user_id, conversation.conversation_id, item.member.role)
                done += 1
            except ApiError as exc:
                log.warning(
                    "deleted user %d could not leave group %s: %s",
                    user_id,
                    conversation.conversation_id,
                    exc.detail,
                )
                failure = failure or exc
        if failure is not None:
            raise failure
        return done

    async def _leave(self, user_id: int, group_id: str, role: int) -> None:
        if role == _OWNER:
            request = group_pb2.ListMembersRequest(conversation_id=group_id, limit=0)
            members = (await self._calls.rpc(self._groups().ListMembers, request)).members
            heir = successor(list(members), user_id)
            if heir is None:
                await self._lifecycle.dissolve(user_id, group_id)
                return
            await self._lifecycle.transfer(user_id, group_id, heir)
        await self._ops.leave_group(user_id, group_id)
