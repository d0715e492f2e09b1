"""The group service's member-settings RPCs (SetMemberSettings, MutedMembers), mixed
into ``GroupServicer``: requests are checked here, rows live in ``settings_store``."""

from __future__ import annotations

import asyncio

import grpc

from im.db import MEMBER_SETTINGS_NAME_CHARS
from im.ids import is_valid_conversation_id
from im.sqlservice import rpc_errors
from im.v1 import group_pb2
from im.validation import InvalidInput, require_clean_name
from services.group.settings_store import MUTED_FOREVER, Patch, SettingsStore, defaults
from services.group.store import invalid

_rpc = rpc_errors("group")

# A mute may end at most this far ahead; longer is "forever" (-1).
MAX_MUTE_AHEAD_MS = 10 * 366 * 86_400_000
MAX_MUTED_QUERIES = 1000
MAX_MUTED_USERS = 20_000


def check_patch(patch: group_pb2.MemberSettingsPatch, now_ms: int) -> Patch:
    """The patch, validated: a mute ends in range (or -1: forever, 0: unmuted), and a
    name is short and free of control characters (empty clears it)."""
    muted_until = name = None
    if patch.HasField("muted_until"):
        muted_until = patch.muted_until
        if muted_until < MUTED_FOREVER or muted_until > now_ms + MAX_MUTE_AHEAD_MS:
            raise invalid(
                "muted_until must be -1 (forever), 0 (not muted) or a time in ms since "
                "the epoch at most 10 years ahead"
            )
    if patch.HasField("name"):
        name = patch.name.strip()
        if len(name) > MEMBER_SETTINGS_NAME_CHARS:
            raise invalid(f"name must be at most {MEMBER_SETTINGS_NAME_CHARS} characters")
        try:
            require_clean_name(name, "name")
        except InvalidInput as exc:
            raise invalid(str(exc)) from None
    result = Patch(
        muted_until=muted_until,
        pinned=patch.pinned if patch.HasField("pinned") else None,
        archived=patch.archived if patch.HasField("archived") else None,
        name=name,
    )
    if not result.values():
        raise invalid("nothing to change: set muted_until, pinned, archived or name")
    return result


class SettingsRpcs:
    """Needs ``self._settings`` (a SettingsStore) and ``self._clock``."""

    _settings: SettingsStore

    @_rpc
    async def SetMemberSettings(
        self, request: group_pb2.MemberSettingsSetRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.MemberSettingsResponse:
        if not is_valid_conversation_id(request.conversation_id):
            raise invalid("malformed conversation_id")
        if request.user_id <= 0:
            raise invalid("user_id must be a positive user id")
        patch = check_patch(request.patch, self._clock.wall_ms())  # type: ignore[attr-defined]
        stored = await asyncio.to_thread(
            self._settings.set, request.conversation_id, request.user_id, patch
        )
        return group_pb2.MemberSettingsResponse(settings=stored)

    @_rpc
    async def MutedMembers(
        self, request: group_pb2.MemberSettingsMutedRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.MemberSettingsMutedResponse:
        if len(request.queries) > MAX_MUTED_QUERIES:
            raise invalid(f"at most {MAX_MUTED_QUERIES} queries per call")
        if sum(len(q.user_ids) for q in request.queries) > MAX_MUTED_USERS:
            raise invalid(f"at most {MAX_MUTED_USERS} user ids per call")
        wanted = [
            (q.conversation_id, list(q.user_ids))
            for q in request.queries
            if is_valid_conversation_id(q.conversation_id) and q.user_ids
        ]
        found = await asyncio.to_thread(self._settings.muted, wanted) if wanted else {}
        return group_pb2.MemberSettingsMutedResponse(
            muted=[
                group_pb2.MemberSettingsMutedQuery(conversation_id=c, user_ids=u)
                for c, u in found.items()
            ]
        )

    async def with_settings(
        self, user_id: int, entries: list[group_pb2.UserConversation]
    ) -> list[group_pb2.UserConversation]:
        """Each of the user's conversations with its settings (defaults where unset)."""
        stored = await asyncio.to_thread(self._settings.of_user, user_id)
        for entry in entries:
            cid = entry.conversation.conversation_id
            entry.settings.CopyFrom(stored.get(cid) or defaults(cid, user_id))
        return entries
