"""Group REST calls, mixed into ``GatewayClient``: create a group, read it, add,
remove and page through members, leave, set roles (the lifecycle calls are in
im/client/group_lifecycle.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from im.client.gateway_http import MAX_MEMBER_PAGE, GatewayCalls, _group_path
from im.client.gateway_types import MemberPage


class GroupCalls(GatewayCalls):
    """A group is named by its conversation id (``"g:7"``), ``7`` or ``"7"``."""

    async def create_group(
        self, name: str, member_ids: list[int], history_visible: bool = False
    ) -> dict[str, Any]:
        """Create a group owned by the caller; returns it (``conversation_id`` is the
        group id). At most 5000 member ids per call: add more with ``add_members``."""
        body = {
            "name": name,
            "member_ids": [int(uid) for uid in member_ids],
            "history_visible": bool(history_visible),
        }
        return await self._request("POST", "/v1/groups", json_body=body)

    async def group(self, group_id: str | int) -> dict[str, Any]:
        """The group with ``my_role`` (owner, admin or member)."""
        return await self._request("GET", _group_path(group_id))

    async def add_members(self, group_id: str | int, user_ids: list[int]) -> list[int]:
        """Add users (owner/admin only); returns those actually added."""
        data = await self._request(
            "POST",
            f"{_group_path(group_id)}/members",
            json_body={"user_ids": [int(uid) for uid in user_ids]},
        )
        return [int(uid) for uid in data.get("added") or []]

    async def remove_member(self, group_id: str | int, user_id: int) -> None:
        await self._request("DELETE", f"{_group_path(group_id)}/members/{int(user_id)}")

    async def leave_group(self, group_id: str | int) -> None:
        await self._request("POST", f"{_group_path(group_id)}/leave")

    async def members(
        self, group_id: str | int, cursor: str | None = None, limit: int = 100
    ) -> MemberPage:
        params: dict[str, Any] = {"limit": max(1, min(int(limit), MAX_MEMBER_PAGE))}
        if cursor:
            params["cursor"] = cursor
        data = await self._request("GET", f"{_group_path(group_id)}/members", params=params)
        return MemberPage(
            members=list(data.get("members") or []), next_cursor=data.get("next_cursor") or None
        )

    async def members_all(
        self, group_id: str | int, *, page_size: int = MAX_MEMBER_PAGE
    ) -> AsyncIterator[dict[str, Any]]:
        """Every member, page by page (one page in memory at a time)."""
        cursor: str | None = None
        while True:
            page = await self.members(group_id, cursor, page_size)
            for member in page.members:
                yield member
            if page.next_cursor is None or not page.members:
                return
            cursor = page.next_cursor

    async def set_role(self, group_id: str | int, user_id: int, role: str) -> dict[str, Any]:
        """``role``: "admin" or "member" (owner only); returns the member."""
        return await self._request(
            "PATCH", f"{_group_path(group_id)}/members/{int(user_id)}", json_body={"role": role}
        )
