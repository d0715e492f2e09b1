"""The group lifecycle's RPCs (a mixin of ``GroupServicer``): requests are checked
here, the rows live in ``lifecycle.py``."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

import grpc

from im.db import GROUP_AVATAR_CHARS, GROUP_DESCRIPTION_CHARS
from im.ids import GROUP_PREFIX, is_valid_conversation_id
from im.sqlservice import rpc_errors
from im.v1 import group_pb2
from im.validation import MAX_INT64, InvalidInput, is_id, require_clean_name
from services.group.lifecycle import LifecycleStore
from services.group.store import MAX_NAME_CHARS, MAX_SQL_INT, invalid

_rpc = rpc_errors("group")

# An attachment id as the attachment store hands them out: short, URL-safe.
ATTACHMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
LINK_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_TOKEN_CHARS = 128
MAX_LINK_USES = 1_000_000


def _group_id(conversation_id: str) -> str:
    if not conversation_id.startswith(GROUP_PREFIX) or not is_valid_conversation_id(
        conversation_id
    ):
        raise invalid(f"malformed group id {conversation_id[:80]!r}")
    return conversation_id


def _user(user_id: int, what: str) -> int:
    if not is_id(user_id):
        raise invalid(f"{what} must be a positive user id")
    return user_id


def _clean(text: str, what: str, allow_newlines: bool = False) -> str:
    try:
        require_clean_name(text.replace("\n", "") if allow_newlines else text, what)
    except InvalidInput as exc:
        raise invalid(str(exc)) from None
    return text


def check_name(raw: str) -> str:
    name = raw.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise invalid(f"group name must be 1 to {MAX_NAME_CHARS} characters")
    return _clean(name, "group name")


def check_description(raw: str) -> str:
    text = raw.strip().replace("\r\n", "\n")
    if len(text) > GROUP_DESCRIPTION_CHARS:
        raise invalid(f"description must be at most {GROUP_DESCRIPTION_CHARS} characters")
    return _clean(text, "description", allow_newlines=True)


def check_avatar(raw: str) -> str:
    """Empty (none), an https URL, or an attachment id."""
    avatar = raw.strip()
    if not avatar or ATTACHMENT_ID.match(avatar):
        return avatar
    if len(avatar) > GROUP_AVATAR_CHARS:
        raise invalid(f"avatar must be at most {GROUP_AVATAR_CHARS} characters")
    parts = urlsplit(avatar)
    if parts.scheme != "https" or not parts.netloc or any(c.isspace() for c in avatar):
        raise invalid("avatar must be an https:// URL or an attachment id")
    return _clean(avatar, "avatar")


def _seq(value: int) -> int:
    if value > MAX_SQL_INT:
        raise invalid("at_seq is out of range")
    return value


class LifecycleRpcs:
    """Mixed into ``GroupServicer``, which sets ``_lifecycle``."""

    _lifecycle: LifecycleStore

    @_rpc
    async def UpdateGroupInfo(
        self, request: group_pb2.UpdateGroupInfoRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.GroupChangeResponse:
        cid = _group_id(request.conversation_id)
        actor = _user(request.actor_id, "actor_id")
        changes: dict[str, str] = {}
        if request.set_name:
            changes["name"] = check_name(request.name)
        if request.set_description:
            changes["description"] = check_description(request.description)
        if request.set_avatar:
            changes["avatar"] = check_avatar(request.avatar)
        if not changes:
            raise invalid("nothing to change: set name, description or avatar")
        conversation, changed = await asyncio.to_thread(
            self._lifecycle.update_info, cid, actor, changes
        )
        return group_pb2.GroupChangeResponse(conversation=conversation, changed=changed)

    @_rpc
    async def TransferOwnership(
        self, request: group_pb2.TransferOwnershipRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.MembersResponse:
        cid = _group_id(request.conversation_id)
        actor = _user(request.actor_id, "actor_id")
        new_owner = _user(request.new_owner_id, "new_owner_id")
        members, version = await asyncio.to_thread(self._lifecycle.transfer, cid, actor, new_owner)
        return group_pb2.MembersResponse(members=members, change_version=version)

    @_rpc
    async def DissolveGroup(
        self, request: group_pb2.DissolveGroupRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.GroupChangeResponse:
        cid = _group_id(request.conversation_id)
        actor = _user(request.actor_id, "actor_id")
        conversation, changed = await asyncio.to_thread(self._lifecycle.dissolve, cid, actor)
        return group_pb2.GroupChangeResponse(conversation=conversation, changed=changed)

    @_rpc
    async def CreateInviteLink(
        self, request: group_pb2.CreateInviteLinkRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.InviteLinkResponse:
        cid = _group_id(request.conversation_id)
        actor = _user(request.actor_id, "actor_id")
        if not 0 < request.expires_at <= MAX_INT64:
            raise invalid("expires_at must be a time in the future (ms since the epoch)")
        if request.max_uses > MAX_LINK_USES:
            raise invalid(f"max_uses must be at most {MAX_LINK_USES} (0 = unlimited)")
        link = await asyncio.to_thread(
            self._lifecycle.create_link,
            cid,
            actor,
            request.expires_at,
            request.max_uses,
            request.approval_required,
        )
        return group_pb2.InviteLinkResponse(link=link)

    @_rpc
    async def ListInviteLinks(
        self, request: group_pb2.ListInviteLinksRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.InviteLinksResponse:
        cid = _group_id(request.conversation_id)
        actor = _user(request.actor_id, "actor_id")
        links = await asyncio.to_thread(self._lifecycle.list_links, cid, actor)
        return group_pb2.InviteLinksResponse(links=links)

    @_rpc
    async def RevokeInviteLink(
        self, request: group_pb2.RevokeInviteLinkRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.InviteLinkResponse:
        cid = _group_id(request.conversation_id)
        actor = _user(request.actor_id, "actor_id")
        if not LINK_ID.match(request.link_id):
            raise invalid("malformed link_id")
        link = await asyncio.to_thread(self._lifecycle.revoke_link, cid, actor, request.link_id)
        return group_pb2.InviteLinkResponse(link=link)

    @_rpc
    async def JoinByLink(
        self, request: group_pb2.JoinByLinkRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.JoinByLinkResponse:
        if not 0 < len(request.token) <= MAX_TOKEN_CHARS:
            raise invalid(f"token must be 1 to {MAX_TOKEN_CHARS} characters")
        user = _user(request.user_id, "user_id")
        return await asyncio.to_thread(
            self._lifecycle.join_by_link,
            request.token,
            user,
            _seq(request.at_seq),
            request.dry_run,
        )

    @_rpc
    async def ListJoinRequests(
        self, request: group_pb2.ListJoinRequestsRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.JoinRequestsResponse:
        cid = _group_id(request.conversation_id)
        actor = _user(request.actor_id, "actor_id")
        requests = await asyncio.to_thread(self._lifecycle.list_requests, cid, actor)
        return group_pb2.JoinRequestsResponse(requests=requests)

    @_rpc
    async def DecideJoinRequest(
        self, request: group_pb2.DecideJoinRequestRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.MembersResponse:
        cid = _group_id(request.conversation_id)
        actor = _user(request.actor_id, "actor_id")
        user = _user(request.user_id, "user_id")
        members, version = await asyncio.to_thread(
            self._lifecycle.decide, cid, actor, user, request.approve, _seq(request.at_seq)
        )
        return group_pb2.MembersResponse(members=members, change_version=version)
