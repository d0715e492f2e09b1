"""The group lifecycle's REST calls, mixed into ``GatewayClient``: rename, describe,
avatar, transfer, dissolve, invite links, joining by link and join requests."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote


def _group(group_id: str | int) -> str:
    gid = str(group_id)
    gid = gid if gid.startswith("g:") else f"g:{gid}"
    return f"/v1/groups/{quote(gid, safe=':')}"


class GroupLifecycleCalls:
    """Needs ``_request(method, path, json_body=..., params=...)`` of the client."""

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    async def update_group(
        self,
        group_id: str | int,
        *,
        name: str | None = None,
        description: str | None = None,
        avatar: str | None = None,
    ) -> dict[str, Any]:
        """Change what is given (owner or admin); returns the group."""
        body = {
            k: v
            for k, v in (("name", name), ("description", description), ("avatar", avatar))
            if v is not None
        }
        return await self._request("PATCH", _group(group_id), json_body=body)

    async def rename_group(self, group_id: str | int, name: str) -> dict[str, Any]:
        return await self.update_group(group_id, name=name)

    async def transfer_group(self, group_id: str | int, user_id: int) -> dict[str, Any]:
        """Make ``user_id`` the owner (owner only); the caller becomes an admin."""
        return await self._request(
            "POST", f"{_group(group_id)}/transfer", json_body={"user_id": int(user_id)}
        )

    async def dissolve_group(self, group_id: str | int) -> dict[str, Any]:
        """Dissolve the group (owner only): read-only from now on."""
        return await self._request("POST", f"{_group(group_id)}/dissolve")

    async def create_invite(
        self,
        group_id: str | int,
        expires_in_seconds: int = 7 * 24 * 3600,
        max_uses: int = 0,
        approval_required: bool = False,
    ) -> dict[str, Any]:
        """A new invite link (owner or admin); its ``token`` is only in this answer."""
        body = {
            "expires_in_seconds": int(expires_in_seconds),
            "max_uses": int(max_uses),
            "approval_required": bool(approval_required),
        }
        return await self._request("POST", f"{_group(group_id)}/invites", json_body=body)

    async def invites(self, group_id: str | int) -> list[dict[str, Any]]:
        data = await self._request("GET", f"{_group(group_id)}/invites")
        return list(data.get("invites") or [])

    async def revoke_invite(self, group_id: str | int, link_id: str) -> dict[str, Any]:
        return await self._request("DELETE", f"{_group(group_id)}/invites/{quote(link_id)}")

    async def join_group(self, token: str) -> dict[str, Any]:
        """Join with an invite token: ``{conversation_id, name, status}``, status one
        of joined, already_member, pending (the link needs approval)."""
        return await self._request("POST", "/v1/groups/join", json_body={"token": token})

    async def join_requests(self, group_id: str | int) -> list[dict[str, Any]]:
        data = await self._request("GET", f"{_group(group_id)}/join-requests")
        return list(data.get("requests") or [])

    async def decide_join_request(self, group_id: str | int, user_id: int, approve: bool) -> bool:
        """Approve or reject; True when the user joined."""
        verb = "approve" if approve else "reject"
        data = await self._request(
            "POST", f"{_group(group_id)}/join-requests/{int(user_id)}/{verb}"
        )
        return bool(data.get("joined"))
