"""The group lifecycle's storage: name, description and avatar, ownership transfer,
dissolution, invite links and join requests. Beside ``store.py``, on the same tables
and the same row lock (every change of one group is serialised by it).

Every change bumps the group's ``change_version``; the gateway names the system event
of a change after it, so a retried event is stored once.
"""

from __future__ import annotations

import hashlib
from typing import Any

import grpc
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from im.clock import Clock
from im.db import ConversationRow, GroupInviteRow, GroupJoinRequestRow, MemberRow
from im.ids import typeable_token
from im.v1 import group_pb2
from services.group.store import (
    ADMIN,
    GROUP,
    MANAGERS,
    MEMBER,
    OWNER,
    GroupError,
    _conversation,
    _member,
    _member_row,
)

_conversations = ConversationRow.__table__
_members = MemberRow.__table__
_invites = GroupInviteRow.__table__
_requests = GroupJoinRequestRow.__table__

MAX_LINKS_PER_GROUP = 100  # live (unrevoked, unexpired) links: bounded storage per group
MAX_PENDING_REQUESTS = 1000  # per group: a public link cannot grow the table without end


def new_link_token() -> str:
    """A fresh invite-link token (URL-safe, 32 characters)."""
    return typeable_token(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _precondition(message: str) -> GroupError:
    return GroupError(grpc.StatusCode.FAILED_PRECONDITION, message)


def _denied(message: str) -> GroupError:
    return GroupError(grpc.StatusCode.PERMISSION_DENIED, message)


def _not_found(message: str) -> GroupError:
    return GroupError(grpc.StatusCode.NOT_FOUND, message)


def lock_group(session: Session, conversation_id: str) -> ConversationRow:
    """The group, row-locked for the transaction (as ``GroupStore._lock``); NOT_FOUND
    for an unknown id, FAILED_PRECONDITION for a direct conversation."""
    session.execute(
        update(_conversations)
        .where(_conversations.c.id == conversation_id)
        .values(member_count=_conversations.c.member_count)
    )
    row = session.get(ConversationRow, conversation_id)
    if row is None:
        raise _not_found(f"conversation {conversation_id!r} not found")
    if row.kind != GROUP:
        raise _precondition("only a group has a lifecycle")
    return row


def require_open(row: ConversationRow) -> None:
    if row.dissolved_at:
        raise _precondition("the group is dissolved")


def bump(row: ConversationRow) -> int:
    """The next change_version of the locked ``row`` (flushed with the transaction)."""
    row.change_version = (row.change_version or 0) + 1
    return row.change_version


def _actor(session: Session, conversation_id: str, actor_id: int, roles: tuple) -> MemberRow:
    actor = session.get(MemberRow, (conversation_id, actor_id))
    if actor is None or actor.role not in roles:
        who = "the owner" if roles == (OWNER,) else "the owner or an admin"
        raise _denied(f"only {who} may do this")
    return actor


def _link(row: Any, token: str = "") -> group_pb2.InviteLink:
    return group_pb2.InviteLink(
        link_id=row.link_id,
        conversation_id=row.conversation_id,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        max_uses=row.max_uses,
        uses=row.uses,
        approval_required=bool(row.approval_required),
        revoked=row.revoked_at is not None,
        token=token,
    )


class LifecycleStore:
    """Every method blocks (run it in a thread) and returns protobuf messages."""

    def __init__(self, engine: Engine, max_group_size: int, clock: Clock) -> None:
        self._engine = engine
        self._max_group_size = max_group_size
        self._clock = clock

    # --- info, ownership, dissolution ------------------------------------------
    def update_info(
        self, conversation_id: str, actor_id: int, changes: dict[str, str]
    ) -> tuple[group_pb2.Conversation, bool]:
        """``changes``: some of name, description, avatar (already validated)."""
        with Session(self._engine) as session, session.begin():
            row = lock_group(session, conversation_id)
            require_open(row)
            _actor(session, conversation_id, actor_id, MANAGERS)
            changed = {k: v for k, v in changes.items() if getattr(row, k) != v}
            for key, value in changed.items():
                setattr(row, key, value)
            if changed:
                bump(row)
            session.flush()
            return _conversation(row), bool(changed)

    def transfer(
        self, conversation_id: str, actor_id: int, new_owner_id: int
    ) -> tuple[list[group_pb2.Member], int]:
        """The new owner and the old one (now an admin), and the change_version."""
        if new_owner_id == actor_id:
            raise _precondition("you already own the group")
        with Session(self._engine) as session, session.begin():
            row = lock_group(session, conversation_id)
            require_open(row)
            old = _actor(session, conversation_id, actor_id, (OWNER,))
            new = session.get(MemberRow, (conversation_id, new_owner_id))
            if new is None:
                raise _not_found(f"user {new_owner_id} is not a member of {conversation_id!r}")
            new.role, old.role = OWNER, ADMIN
            row.owner_id = new_owner_id
            version = bump(row)
            session.flush()
            return [_member(new), _member(old)], version

    def dissolve(self, conversation_id: str, actor_id: int) -> tuple[group_pb2.Conversation, bool]:
        with Session(self._engine) as session, session.begin():
            row = lock_group(session, conversation_id)
            _actor(session, conversation_id, actor_id, (OWNER,))
            if row.dissolved_at:
                return _conversation(row), False
            row.dissolved_at = self._clock.wall_ms()
            bump(row)
            # Links and requests can no longer lead anywhere.
            session.execute(
                update(_invites)
                .where(
                    _invites.c.conversation_id == conversation_id, _invites.c.revoked_at.is_(None)
                )
                .values(revoked_at=row.dissolved_at)
            )
            session.execute(delete(_requests).where(_requests.c.conversation_id == conversation_id))
            session.flush()
            return _conversation(row), True

    # --- invite links ------------------------------------------------------------
    def create_link(
        self,
        conversation_id: str,
        actor_id: int,
        expires_at: int,
        max_uses: int,
        approval_required: bool,
    ) -> group_pb2.InviteLink:
        now = self._clock.wall_ms()
        if expires_at <= now:
            raise GroupError(grpc.StatusCode.INVALID_ARGUMENT, "expires_at must be in the future")
        token = new_link_token()
        digest = token_hash(token)
        values = {
            "token_hash": digest,
            "link_id": digest[:16],
            "conversation_id": conversation_id,
            "created_by": actor_id,
            "created_at": now,
            "expires_at": expires_at,
            "max_uses": max_uses,
            "uses": 0,
            "approval_required": approval_required,
            "revoked_at": None,
        }
        with Session(self._engine) as session, session.begin():
            row = lock_group(session, conversation_id)
            require_open(row)
            _actor(session, conversation_id, actor_id, MANAGERS)
            live = session.scalars(
                select(_invites.c.link_id).where(
                    _invites.c.conversation_id == conversation_id,
                    _invites.c.revoked_at.is_(None),
                    _invites.c.expires_at > now,
                )
            ).all()
            if len(live) >= MAX_LINKS_PER_GROUP:
                raise _precondition(f"a group may have at most {MAX_LINKS_PER_GROUP} live links")
            session.execute(insert(_invites), [values])
        return _link(GroupInviteRow(**values), token)

    def list_links(self, conversation_id: str, actor_id: int) -> list[group_pb2.InviteLink]:
        with Session(self._engine) as session:
            if session.get(ConversationRow, conversation_id) is None:
                raise _not_found(f"conversation {conversation_id!r} not found")
            _actor(session, conversation_id, actor_id, MANAGERS)
            rows = session.execute(
                select(_invites)
                .where(_invites.c.conversation_id == conversation_id)
                .order_by(_invites.c.created_at, _invites.c.link_id)
                .limit(MAX_LINKS_PER_GROUP * 10)
            ).all()
            return [_link(r) for r in rows]

    def revoke_link(
        self, conversation_id: str, actor_id: int, link_id: str
    ) -> group_pb2.InviteLink:
        with Session(self._engine) as session, session.begin():
            lock_group(session, conversation_id)
            _actor(session, conversation_id, actor_id, MANAGERS)
            link = session.scalars(
                select(GroupInviteRow).where(
                    GroupInviteRow.link_id == link_id,
                    GroupInviteRow.conversation_id == conversation_id,
                )
            ).first()
            if link is None:
                raise _not_found(f"no invite link {link_id!r} in this group")
            if link.revoked_at is None:
                link.revoked_at = self._clock.wall_ms()
                session.flush()
            return _link(link)

    # --- joining -------------------------------------------------------------------
    def join_by_link(
        self, token: str, user_id: int, at_seq: int, dry_run: bool = False
    ) -> group_pb2.JoinByLinkResponse:
        """Joins (or files a join request); ``dry_run`` only checks the link."""
        now = self._clock.wall_ms()
        with Session(self._engine) as session, session.begin():
            link = session.get(GroupInviteRow, token_hash(token))
            if link is None or link.revoked_at is not None:
                raise _not_found("no such invite link (unknown or revoked)")
            row = lock_group(session, link.conversation_id)
            session.refresh(link)  # read again under the group's lock: uses are exact
            require_open(row)
            cid = row.id
            present = session.get(MemberRow, (cid, user_id))
            if present is not None:
                return group_pb2.JoinByLinkResponse(
                    conversation=_conversation(row), member=_member(present), already_member=True
                )
            if link.revoked_at is not None:
                raise _not_found("no such invite link (unknown or revoked)")
            if link.expires_at <= now:
                raise _precondition("the invite link has expired")
            pending = session.get(GroupJoinRequestRow, (cid, user_id))
            if link.approval_required and pending is not None:
                return group_pb2.JoinByLinkResponse(conversation=_conversation(row), pending=True)
            if link.max_uses and link.uses >= link.max_uses:
                raise _precondition("the invite link has been used up")
            if dry_run:
                return group_pb2.JoinByLinkResponse(
                    conversation=_conversation(row), pending=link.approval_required
                )
            link.uses += 1
            if link.approval_required:
                self._file_request(session, cid, user_id, link.link_id, now)
                return group_pb2.JoinByLinkResponse(conversation=_conversation(row), pending=True)
            member = self._add_member(session, row, user_id, at_seq, now)
            version = bump(row)
            session.flush()
            return group_pb2.JoinByLinkResponse(
                conversation=_conversation(row), member=member, change_version=version
            )

    @staticmethod
    def _file_request(session: Session, cid: str, user_id: int, link_id: str, now: int) -> None:
        count = session.scalars(
            select(_requests.c.user_id).where(_requests.c.conversation_id == cid)
        ).all()
        if len(count) >= MAX_PENDING_REQUESTS:
            raise _precondition("too many pending join requests; ask an admin")
        session.execute(
            insert(_requests),
            [{"conversation_id": cid, "user_id": user_id, "link_id": link_id, "requested_at": now}],
        )

    def _add_member(
        self, session: Session, row: ConversationRow, user_id: int, at_seq: int, now: int
    ) -> group_pb2.Member:
        if row.member_count + 1 > self._max_group_size:
            raise _precondition(f"a group may have at most {self._max_group_size} members")
        values = _member_row(row.id, user_id, MEMBER, at_seq, now)
        session.execute(insert(_members), [values])
        row.member_count += 1
        row.member_version = (row.member_version or 0) + 1
        return group_pb2.Member(**values)

    def list_requests(self, conversation_id: str, actor_id: int) -> list[group_pb2.JoinRequest]:
        with Session(self._engine) as session:
            if session.get(ConversationRow, conversation_id) is None:
                raise _not_found(f"conversation {conversation_id!r} not found")
            _actor(session, conversation_id, actor_id, MANAGERS)
            rows = session.execute(
                select(_requests)
                .where(_requests.c.conversation_id == conversation_id)
                .order_by(_requests.c.requested_at, _requests.c.user_id)
                .limit(MAX_PENDING_REQUESTS)
            ).all()
            return [
                group_pb2.JoinRequest(
                    conversation_id=r.conversation_id,
                    user_id=r.user_id,
                    link_id=r.link_id,
                    requested_at=r.requested_at,
                )
                for r in rows
            ]

    def decide(
        self, conversation_id: str, actor_id: int, user_id: int, approve: bool, at_seq: int
    ) -> tuple[list[group_pb2.Member], int]:
        """Approve (the user joins) or reject a join request; the new member (if any)
        and the change_version (0 when nobody joined)."""
        now = self._clock.wall_ms()
        with Session(self._engine) as session, session.begin():
            row = lock_group(session, conversation_id)
            require_open(row)
            _actor(session, conversation_id, actor_id, MANAGERS)
            pending = session.get(GroupJoinRequestRow, (conversation_id, user_id))
            if pending is None:
                raise _not_found(f"no join request of user {user_id}")
            session.delete(pending)
            if not approve or session.get(MemberRow, (conversation_id, user_id)) is not None:
                return [], 0
            member = self._add_member(session, row, user_id, at_seq, now)
            version = bump(row)
            session.flush()
            return [member], version
