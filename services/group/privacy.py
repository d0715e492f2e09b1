"""Blocking and privacy, kept next to conversations because the group service is where
they take effect: whether a 1:1 conversation accepts messages, and whom an actor may
add to a group.

A block is one row (blocker, blocked). Either direction stops the pair's 1:1 messages
(the blocker would otherwise write into a conversation the other cannot answer); only
the blocked side is kept from inviting the blocker. Refusals name no reason: the blocked
user must not learn of the block from an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from sqlalchemy import delete, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from im.clock import Clock
from im.db import MemberRow, UserBlockRow, UserPrivacyRow
from im.ids import direct_conversation_id, parse_direct
from im.sqlservice import ServiceError
from im.v1 import group_pb2

_blocks = UserBlockRow.__table__
_privacy = UserPrivacyRow.__table__
_members = MemberRow.__table__
IN_CHUNK = 900
NOT_ADDABLE = "some of these users cannot be added by you"


def _chunks(values: Sequence[int], size: int = IN_CHUNK):  # type: ignore[no-untyped-def]
    for start in range(0, len(values), size):
        yield values[start : start + size]


class PrivacyStore:
    """Every method blocks: run it in a thread (or call it inside a transaction the
    caller holds, for the ``*_in`` helpers)."""

    def __init__(self, engine, clock: Clock) -> None:  # type: ignore[no-untyped-def]
        self._engine = engine
        self._clock = clock

    # --- blocks -------------------------------------------------------------------
    def block(self, user_id: int, target_id: int) -> bool:
        """True when the block is new."""
        try:
            with Session(self._engine) as session, session.begin():
                row = {
                    "blocker_id": user_id,
                    "blocked_id": target_id,
                    "created_at": self._clock.wall_ms(),
                }
                session.execute(insert(_blocks), [row])
        except IntegrityError:
            return False  # already blocked (perhaps by a concurrent request)
        return True

    def unblock(self, user_id: int, target_id: int) -> bool:
        with Session(self._engine) as session, session.begin():
            result = session.execute(
                delete(_blocks).where(
                    _blocks.c.blocker_id == user_id, _blocks.c.blocked_id == target_id
                )
            )
            return result.rowcount > 0

    def list_blocks(self, user_id: int) -> tuple[list[int], list[int]]:
        """(users this user blocked, users who blocked this user), each ascending."""
        with Session(self._engine) as session:
            blocked = session.scalars(
                select(_blocks.c.blocked_id)
                .where(_blocks.c.blocker_id == user_id)
                .order_by(_blocks.c.blocked_id)
            ).all()
            blocked_by = session.scalars(
                select(_blocks.c.blocker_id)
                .where(_blocks.c.blocked_id == user_id)
                .order_by(_blocks.c.blocker_id)
            ).all()
            return list(blocked), list(blocked_by)

    def send_blocked(self, conversation_id: str) -> bool:
        """A 1:1 conversation whose pair has a block in either direction."""
        pair = parse_direct(conversation_id)
        if pair is None:
            return False
        a, b = pair
        with Session(self._engine) as session:
            found = session.scalar(
                select(_blocks.c.blocker_id)
                .where(
                    or_(
                        (_blocks.c.blocker_id == a) & (_blocks.c.blocked_id == b),
                        (_blocks.c.blocker_id == b) & (_blocks.c.blocked_id == a),
                    )
                )
                .limit(1)
            )
            return found is not None

    # --- privacy ------------------------------------------------------------------
    def get_privacy(self, user_id: int) -> group_pb2.PrivacySettings:
        with Session(self._engine) as session:
            row = session.get(UserPrivacyRow, user_id)
            contacts_only = bool(row.invites_from_contacts_only) if row is not None else False
            return group_pb2.PrivacySettings(
                user_id=user_id, invites_from_contacts_only=contacts_only
            )

    def set_privacy(self, settings: group_pb2.PrivacySettings) -> group_pb2.PrivacySettings:
        with Session(self._engine) as session, session.begin():
            row = session.get(UserPrivacyRow, settings.user_id)
            if row is None:
                session.add(
                    UserPrivacyRow(
                        user_id=settings.user_id,
                        invites_from_contacts_only=settings.invites_from_contacts_only,
                    )
                )
            else:
                row.invites_from_contacts_only = settings.invites_from_contacts_only
        return self.get_privacy(settings.user_id)

    # --- invites ------------------------------------------------------------------
    @staticmethod
    def refuse_uninvitable_in(session: Session, actor_id: int, user_ids: list[int]) -> None:
        """Raises PERMISSION_DENIED, naming no reason, when any of ``user_ids`` blocked
        the actor or takes invites from contacts only and has no 1:1 conversation with
        the actor. Runs inside the caller's transaction."""
        others = [uid for uid in user_ids if uid != actor_id]
        if not others:
            return
        for chunk in _chunks(others):
            blocked_actor = session.scalar(
                select(_blocks.c.blocker_id)
                .where(_blocks.c.blocked_id == actor_id, _blocks.c.blocker_id.in_(chunk))
                .limit(1)
            )
            if blocked_actor is not None:
                raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, NOT_ADDABLE)
            strict = session.scalars(
                select(_privacy.c.user_id).where(
                    _privacy.c.user_id.in_(chunk), _privacy.c.invites_from_contacts_only
                )
            ).all()
            if strict and not _all_contacts(session, actor_id, list(strict)):
                raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, NOT_ADDABLE)


def _all_contacts(session: Session, actor_id: int, user_ids: list[int]) -> bool:
    """Each of ``user_ids`` has the actor as a contact: a 1:1 conversation with the
    actor in which that user has read something. A stranger's first message creates
    the conversation, but it takes the recipient's reading it to make a contact."""
    wanted = {(direct_conversation_id(actor_id, uid), uid) for uid in user_ids}
    rows = session.execute(
        select(_members.c.conversation_id, _members.c.user_id).where(
            _members.c.conversation_id.in_(sorted(c for c, _ in wanted)),
            _members.c.user_id.in_(user_ids),
            _members.c.read_seq > 0,
        )
    )
    return wanted <= {(row[0], row[1]) for row in rows}
