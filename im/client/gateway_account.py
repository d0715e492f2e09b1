"""The account's REST calls, mixed into ``GatewayClient``: register, log in, refresh,
log out, the password; users; blocking and privacy."""

from __future__ import annotations

from typing import Any

from im.client.errors import ApiError
from im.client.gateway_http import GatewayCalls
from im.client.gateway_types import LoginResult


class AccountCalls(GatewayCalls):
    """Keeps the client's ``token`` and ``refresh_token`` up to date as the session
    starts, refreshes and ends."""

    token: str | None
    refresh_token: str | None
    last_login: LoginResult | None

    async def _request_once(self, method: str, path: str, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    # ---------------------------------------------------------------------- auth

    async def register(
        self, username: str, password: str, display_name: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"username": username, "password": password}
        if display_name is not None:
            body["display_name"] = display_name
        return await self._request("POST", "/v1/auth/register", json_body=body, auth=False)

    async def login(self, username: str, password: str, device_id: str) -> LoginResult:
        data = await self._request(
            "POST",
            "/v1/auth/login",
            json_body={"username": username, "password": password, "device_id": device_id},
            auth=False,
        )
        return self._logged_in(LoginResult.from_json(data))

    def _logged_in(self, result: LoginResult) -> LoginResult:
        self.token = result.access_token
        self.refresh_token = result.refresh_token or None
        self.last_login = result
        return result

    async def refresh(self) -> LoginResult:
        """New access and refresh tokens (and connector) for this session, without the
        password. Raises ApiError 401 when the session has ended (log in again)."""
        if not self.refresh_token:
            raise ApiError(401, "unauthorized", "no refresh token: log in first")
        try:
            data = await self._request_once(
                "POST",
                "/v1/auth/refresh",
                json_body={"refresh_token": self.refresh_token},
                auth=False,
            )
        except ApiError as exc:
            if exc.status == 401:
                self.token = self.refresh_token = None  # the session is over
            raise
        return self._logged_in(LoginResult.from_json(data))

    async def logout(self) -> None:
        await self._request("POST", "/v1/auth/logout")
        self.token = self.refresh_token = None

    async def logout_all(self) -> None:
        """End every session of this user (every device), this one included."""
        await self._request("POST", "/v1/auth/logout-all")
        self.token = self.refresh_token = None

    async def change_password(self, current_password: str, new_password: str) -> None:
        """Set a new password; every other session of the user ends, this one stays."""
        await self._request(
            "POST",
            "/v1/users/me/password",
            json_body={"current_password": current_password, "new_password": new_password},
        )

    # --------------------------------------------------------------------- users

    async def me(self) -> dict[str, Any]:
        return await self._request("GET", "/v1/users/me")

    async def user(self, user_id: int) -> dict[str, Any]:
        return await self._request("GET", f"/v1/users/{int(user_id)}")

    async def user_by_name(self, username: str) -> dict[str, Any] | None:
        data = await self._request("GET", "/v1/users", params={"username": username})
        users = data.get("users") or []
        return users[0] if users else None

    # ------------------------------------------------------------------ privacy

    async def block(self, user_id: int) -> None:
        """No 1:1 messages either way, no group invites from them, no presence."""
        await self._request("PUT", f"/v1/users/{int(user_id)}/block")

    async def unblock(self, user_id: int) -> None:
        await self._request("DELETE", f"/v1/users/{int(user_id)}/block")

    async def blocks(self) -> list[int]:
        """The users this user blocked."""
        data = await self._request("GET", "/v1/users/me/blocks")
        return [int(uid) for uid in data.get("user_ids") or []]

    async def privacy(self) -> dict[str, Any]:
        return await self._request("GET", "/v1/users/me/privacy")

    async def set_privacy(self, *, invites_from_contacts_only: bool) -> dict[str, Any]:
        return await self._request(
            "PATCH",
            "/v1/users/me/privacy",
            json_body={"invites_from_contacts_only": bool(invites_from_contacts_only)},
        )
