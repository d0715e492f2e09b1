"""The admin operations (docs/rest-api.md, "Admin"), shared by the REST routes
(api_admin.py) and the gateway's AdminService (admin_grpc.py).

The user service changes the tables (UserAdminService) and names the sessions it
revoked; this side then does what only the gateway can: revokes those sessions' access
tokens (SessionStore), kicks the user's sockets on every connector presence names, and
erases message bodies in the message store, takes a deleted user out of its groups.
Errors leave as ``ApiError``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc

from im.config import Settings
from im.ports import MessageStore
from im.v1 import admin_pb2, admin_pb2_grpc, wire_pb2
from services.gateway.assignment import ConnectorAssigner
from services.gateway.calls import Calls
from services.gateway.errors import ApiError, rpc_error
from services.gateway.sessions import Sessions

log = logging.getLogger("im.gateway")

# Imports hash plain passwords (slow) and insert thousands of rows: more time than
# the usual call's.
IMPORT_TIMEOUT = 120.0
_OVERRIDES = {grpc.StatusCode.FAILED_PRECONDITION: (409, "user_deleted")}
_REVOKED = wire_pb2.KICK_REASON_TOKEN_REVOKED


class AdminOps:
    def __init__(
        self,
        settings: Settings,
        stub: admin_pb2_grpc.UserAdminServiceStub | None,
        calls: Calls,
        sessions: Sessions,
        connectors: ConnectorAssigner,
        message_store: MessageStore,
        leave_groups: Callable[[int], Awaitable[int]],
    ) -> None:
        """``leave_groups``: takes a deleted user out of its groups (``departure.py``)."""
        self._settings = settings
        self.stub = stub  # set by Gateway.open (channels belong to the running loop)
        self._calls = calls
        self._sessions = sessions
        self._connectors = connectors
        self._messages = message_store
        self._leave_groups = leave_groups

    def _users(self) -> admin_pb2_grpc.UserAdminServiceStub:
        if self.stub is None:
            raise RuntimeError("gateway not started")
        return self.stub

    async def _rpc(self, call: object, request: object) -> object:
        return await self._calls.rpc(call, request, _OVERRIDES)

    async def _end(self, change: admin_pb2.UserChange) -> int:
        """Revokes the ended sessions' tokens (and again those revoked before: a
        repeated operation completes a revocation that failed), then kicks every
        socket of the user. Returns how many sessions ended now."""
        await self._sessions.end([*change.revoked, *change.revoked_before], _REVOKED)
        try:
            await self._connectors.kick_user(change.user.user_id, _REVOKED)
        except ApiError as exc:
            # Presence is down, so no connector can be named; the tokens are revoked
            # already and every connector refuses them at the next Auth.
            log.warning("could not kick user %d: %s", change.user.user_id, exc.detail)
        return len(change.revoked)

    async def disable(self, user_id: int) -> admin_pb2.AdminUserResponse:
        request = admin_pb2.SetUserDisabledRequest(user_id=user_id, disabled=True)
        change = await self._rpc(self._users().SetDisabled, request)
        ended = await self._end(change)
        return admin_pb2.AdminUserResponse(user=change.user, sessions_ended=ended)

    async def enable(self, user_id: int) -> admin_pb2.AdminUserResponse:
        request = admin_pb2.SetUserDisabledRequest(user_id=user_id, disabled=False)
        change = await self._rpc(self._users().SetDisabled, request)
        return admin_pb2.AdminUserResponse(user=change.user)

    async def reset_password(
        self, user_id: int, new_password: str = ""
    ) -> admin_pb2.ResetPasswordResponse:
        request = admin_pb2.ResetPasswordRequest(user_id=user_id, new_password=new_password)
        change = await self._rpc(self._users().ResetPassword, request)
        ended = await self._end(change)
        return admin_pb2.ResetPasswordResponse(
            user=change.user, sessions_ended=ended, generated_password=change.generated_password
        )

    async def delete(self, user_id: int, erase_messages: bool) -> admin_pb2.DeleteUserResponse:
        change = await self._rpc(
            self._users().DeleteUser, admin_pb2.AdminUserRequest(user_id=user_id)
        )
        ended = await self._end(change)
        erased = 0
        if erase_messages:
            erased = await self._calls.backend(
                "message store", self._messages.erase_sender(user_id)
            )
        left = await self._leave_groups(user_id)
        return admin_pb2.DeleteUserResponse(
            user=change.user, sessions_ended=ended, messages_erased=erased, groups_left=left
        )

    async def sessions(self, user_id: int) -> admin_pb2.ListSessionsResponse:
        listed = await self._rpc(
            self._users().ListSessions, admin_pb2.AdminUserRequest(user_id=user_id)
        )
        online = await self._connectors.device_connectors(user_id)
        for session in listed.sessions:
            session.connector_id = online.get(session.device_id, "")
        return listed

    async def import_users(
        self, users: list[admin_pb2.ImportUser]
    ) -> admin_pb2.ImportUsersResponse:
        request = admin_pb2.ImportUsersRequest(users=users)
        try:
            return await self._users().ImportUsers(request, timeout=IMPORT_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, _OVERRIDES) from exc
