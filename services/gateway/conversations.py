"""Conversations as one user sees them: the list with cursors and unread counts, the
1:1 conversation with a peer, history, delivered/read cursors and read receipts.
Membership is the group service's; messages are the message store's."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from im.config import Settings
from im.ids import is_valid_conversation_id, parse_direct
from im.ports import ActivityStore, MessageStore
from im.v1 import bus_pb2, group_pb2, group_pb2_grpc, user_pb2, wire_pb2
from services.gateway.calls import Calls
from services.gateway.errors import ApiError, cannot_write, forbidden, group_dissolved


def require_writable(answer: group_pb2.CheckMemberResponse) -> None:
    """Refuses new content from a member: 409 in a dissolved (read-only) group, 403 in
    a 1:1 with a block either way (neutral, like a refused socket Send)."""
    if answer.read_only:
        raise group_dissolved()
    if answer.send_blocked:
        raise cannot_write()


@dataclass(frozen=True, slots=True)
class ConversationView:
    conversation_id: str
    kind: str
    name: str
    peer_id: int | None
    last_seq: int
    delivered_seq: int
    read_seq: int
    unread: int
    dissolved: bool = False
    last_activity_at: int = 0
    settings: group_pb2.MemberSettings | None = None  # in the list only
    now_ms: int = 0  # when the view was made (whether a mute is still on)


_KINDS = {
    group_pb2.CONVERSATION_KIND_DIRECT: "direct",
    group_pb2.CONVERSATION_KIND_GROUP: "group",
}


@dataclass(frozen=True, slots=True)
class ReceiptsView:
    conversation_id: str
    seq: int
    sender_id: int
    read_count: int
    unread_count: int
    # None when that list was not asked for; else (user ids, next cursor or None).
    read_by: tuple[list[int], str | None] | None
    unread: tuple[list[int], str | None] | None


def _activity_at(entry: group_pb2.UserConversation, activity: dict[str, tuple[int, int]]) -> int:
    """The newest message's time; before any, when the user's membership began."""
    _seq, server_ts = activity.get(entry.conversation.conversation_id, (0, 0))
    return server_ts or max(entry.conversation.created_at, entry.member.joined_at)


def _list_order(view: ConversationView) -> tuple[bool, int, str]:
    """Pinned first, then the most recently active, then by id (a stable order)."""
    pinned = view.settings is not None and view.settings.pinned
    return (not pinned, -view.last_activity_at, view.conversation_id)


class ConversationOps:
    """The conversation operations of ``Gateway`` (``gateway.conversation_ops``);
    ``me`` is always the calling user."""

    def __init__(
        self,
        settings: Settings,
        groups: Callable[[], group_pb2_grpc.GroupServiceStub],
        messages: MessageStore,
        calls: Calls,
        get_user: Callable[[int], Awaitable[user_pb2.User]],
    ) -> None:
        self._settings = settings
        self._groups = groups
        self._messages = messages
        self._calls = calls
        self._get_user = get_user

    async def open_direct(self, me: int, peer_id: int) -> ConversationView:
        if peer_id == me:
            raise ApiError(422, "invalid_request", "a direct conversation needs another user")
        await self._get_user(peer_id)
        request = group_pb2.GetOrCreateDirectRequest(user_a=me, user_b=peer_id)
        conversation = (
            await self._calls.rpc(self._groups().GetOrCreateDirect, request)
        ).conversation
        member = await self.member(conversation.conversation_id, me)
        if member is None:  # cannot happen for a pair we just created; be safe
            raise forbidden()
        last = await self.last_seqs([conversation.conversation_id])
        return self._view(me, conversation, member, last)

    async def conversations(self, me: int) -> list[ConversationView]:
        request = group_pb2.ListUserConversationsRequest(user_id=me)
        entries = (
            await self._calls.rpc(self._groups().ListUserConversations, request)
        ).conversations
        # One message-store round trip for every conversation, not one each.
        activity = await self.last_activity([e.conversation.conversation_id for e in entries])
        last = {cid: seq for cid, (seq, _ts) in activity.items()}
        now = int(time.time() * 1000)
        views = [
            dataclasses.replace(
                self._view(me, e.conversation, e.member, last),
                last_activity_at=_activity_at(e, activity),
                settings=e.settings,
                now_ms=now,
            )
            for e in entries
        ]
        return sorted(views, key=_list_order)

    async def last_activity(self, conversation_ids: list[str]) -> dict[str, tuple[int, int]]:
        """(last seq, its server_ts) per conversation; a store without ``last_activity``
        tells seqs only."""
        if not conversation_ids:
            return {}
        if not isinstance(self._messages, ActivityStore):
            return {c: (seq, 0) for c, seq in (await self.last_seqs(conversation_ids)).items()}
        return await self._calls.backend(
            "message store", self._messages.last_activity(conversation_ids)
        )

    async def last_seqs(self, conversation_ids: list[str]) -> dict[str, int]:
        if not conversation_ids:
            return {}
        return await self._calls.backend(
            "message store", self._messages.last_seqs(conversation_ids)
        )

    @staticmethod
    def _view(
        me: int,
        conversation: group_pb2.Conversation,
        member: group_pb2.Member,
        last_seqs: dict[str, int],
    ) -> ConversationView:
        cid = conversation.conversation_id
        last_seq = last_seqs.get(cid, 0)
        peer_id = None
        pair = parse_direct(cid)
        if pair is not None:
            peer_id = pair[1] if pair[0] == me else pair[0]
        # Messages before the member joined are not theirs to read, so not unread.
        read_floor = max(member.read_seq, member.joined_seq)
        return ConversationView(
            conversation_id=cid,
            kind=_KINDS.get(conversation.kind, "direct" if pair else "group"),
            name=conversation.name,
            peer_id=peer_id,
            last_seq=last_seq,
            delivered_seq=member.delivered_seq,
            read_seq=member.read_seq,
            unread=max(0, last_seq - read_floor),
            dissolved=conversation.dissolved,
        )

    async def member(self, conversation_id: str, user_id: int) -> group_pb2.Member | None:
        answer = await self.membership(conversation_id, user_id)
        return answer.member if answer.is_member else None

    async def membership(self, conversation_id: str, user_id: int) -> group_pb2.CheckMemberResponse:
        """The group service's whole answer: membership, and whether sending is refused
        (a blocked 1:1 pair, a dissolved group)."""
        request = group_pb2.CheckMemberRequest(conversation_id=conversation_id, user_id=user_id)
        try:
            return await self._calls.rpc(self._groups().CheckMember, request)
        except ApiError as exc:
            # An unknown conversation answers like one the user is not in: ids of
            # other people's conversations must not be probeable.
            if exc.status in (403, 404):
                return group_pb2.CheckMemberResponse(is_member=False)
            raise

    async def require_member(self, conversation_id: str, user_id: int) -> group_pb2.Member:
        return (await self.require_membership(conversation_id, user_id)).member

    async def require_membership(
        self, conversation_id: str, user_id: int
    ) -> group_pb2.CheckMemberResponse:
        """``membership`` of a member; 404 for a malformed id, 403 for anyone else."""
        if not is_valid_conversation_id(conversation_id):
            raise ApiError(404, "not_found", "no such conversation")
        answer = await self.membership(conversation_id, user_id)
        if not answer.is_member:
            raise forbidden()
        return answer

    async def history(
        self, me: int, conversation_id: str, after_seq: int, limit: int
    ) -> tuple[list[wire_pb2.Message], bool]:
        member = await self.require_member(conversation_id, me)
        # A member sees only what was sent after it joined.
        after = max(after_seq, member.joined_seq)
        # One extra row tells whether another page exists without a count query.
        messages = await self._calls.backend(
            "message store", self._messages.history(conversation_id, after, limit + 1)
        )
        return messages[:limit], len(messages) > limit

    async def update_cursor(
        self, me: int, conversation_id: str, seq: int, read: bool, device_id: str = ""
    ) -> None:
        await self.require_member(conversation_id, me)
        # A cursor beyond the last stored message would hide messages still to come.
        last = (await self.last_seqs([conversation_id])).get(conversation_id, 0)
        seq = min(seq, last)
        if seq <= 0:
            return  # nothing to move (0 means "unchanged" to the group service)
        update = group_pb2.CursorUpdate(
            conversation_id=conversation_id,
            user_id=me,
            delivered_seq=seq,  # having read something implies having received it
            read_seq=seq if read else 0,
        )
        await self._calls.rpc(
            self._groups().UpdateCursors, group_pb2.UpdateCursorsRequest(updates=[update])
        )
        # Written directly so the answer reflects it; also reported on the bus, the
        # path socket reads take, so the router pushes the Receipt to the other
        # members now. The router's own cursor write of it is a no-op (forward-only).
        report = bus_pb2.CursorReport(
            conversation_id=conversation_id,
            user_id=me,
            device_id=device_id,
            delivered_seq=seq,
            read_seq=seq if read else 0,
        )
        await self._calls.publish(self._settings.topic_cursors, conversation_id, report)

    async def receipts(
        self,
        me: int,
        conversation_id: str,
        seq: int,
        cursor: str,
        limit: int,
        which: str,
    ) -> ReceiptsView:
        """Who has (not) read message ``seq``, from the members' read cursors.

        Counts are one aggregate query; the lists are pages of at most ``limit`` ids
        (``which``: "read", "unread" or "both"), so memory stays flat in any group.
        """
        member = await self.require_member(conversation_id, me)
        not_found = ApiError(404, "not_found", f"no message {seq} in this conversation")
        if seq <= member.joined_seq:
            raise not_found  # from before the caller joined: not theirs to see
        found = await self._calls.backend(
            "message store", self._messages.history(conversation_id, seq - 1, 1)
        )
        if not found or found[0].seq != seq:
            raise not_found
        sender = found[0].sender_id  # the sender has read its own message: not counted
        count = self._calls.rpc(
            self._groups().CountReaders,
            group_pb2.ReadersRequest(
                conversation_id=conversation_id, seq=seq, exclude_user_id=sender
            ),
        )
        lists = {"read": [True], "unread": [False], "both": [True, False]}[which]
        pages = [
            self._calls.rpc(
                self._groups().ListReaders,
                group_pb2.ListReadersRequest(
                    conversation_id=conversation_id,
                    seq=seq,
                    exclude_user_id=sender,
                    read=read,
                    cursor=cursor,
                    limit=limit,
                ),
            )
            for read in lists
        ]
        counts, *answers = await asyncio.gather(count, *pages)
        by_kind = {
            read: ([m.user_id for m in answer.members], answer.next_cursor or None)
            for read, answer in zip(lists, answers, strict=True)
        }
        return ReceiptsView(
            conversation_id=conversation_id,
            seq=seq,
            sender_id=sender,
            read_count=counts.read_count,
            unread_count=counts.unread_count,
            read_by=by_kind.get(True),
            unread=by_kind.get(False),
        )
