"""Conversation REST calls, mixed into ``GatewayClient``: the list, 1:1 conversations,
presence, sync and one's own settings of a conversation."""

from __future__ import annotations

from typing import Any

from im.client.gateway_http import GatewayCalls, _conv_path


class ConversationCalls(GatewayCalls):
    """Conversations come back as the gateway's JSON dicts."""

    async def direct_conversation(self, peer_id: int) -> dict[str, Any]:
        return await self._request(
            "POST", "/v1/conversations/direct", json_body={"peer_id": int(peer_id)}
        )

    async def conversations(self) -> list[dict[str, Any]]:
        data = await self._request("GET", "/v1/conversations")
        return list(data.get("conversations") or [])

    async def conversation_presence(self, conversation_id: str) -> list[dict[str, Any]]:
        """Each other member's ``{user_id, online, last_seen_ms}`` (null: unknown or hidden)."""
        data = await self._request(
            "GET", f"/v1/conversations/{_conv_path(conversation_id)}/presence"
        )
        return list(data.get("members") or [])

    async def my_presence(self) -> dict[str, Any]:
        return await self._request("GET", "/v1/users/me/presence")

    async def set_presence_visible(self, visible: bool) -> dict[str, Any]:
        """Show (True) or hide (False) this user's online state and last seen."""
        return await self._request(
            "PUT", "/v1/users/me/presence", json_body={"visible": bool(visible)}
        )

    async def sync(self) -> list[dict[str, Any]]:
        data = await self._request("GET", "/v1/sync")
        return list(data.get("conversations") or [])

    async def update_settings(
        self,
        conversation_id: str,
        *,
        muted_until: int | None = None,
        mute_for_seconds: int | None = None,
        pinned: bool | None = None,
        archived: bool | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Change your own settings of a conversation; only the arguments given change.
        ``muted_until``: ms since the epoch, 0 unmutes, -1 mutes forever. Returns
        ``{muted, muted_until, pinned, archived, name, updated_at}``; your other online
        devices get a ``ConversationSettingsChanged`` event."""
        fields = {
            "muted_until": muted_until,
            "mute_for_seconds": mute_for_seconds,
            "pinned": pinned,
            "archived": archived,
            "name": name,
        }
        return await self._request(
            "PATCH",
            f"/v1/conversations/{_conv_path(conversation_id)}/settings",
            json_body={k: v for k, v in fields.items() if v is not None},
        )
