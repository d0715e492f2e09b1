"""Each member's own settings of a conversation (mute, pin, archive, a name of its
own), in the ``member_settings`` table. A row exists only once something was set; no
row reads as the defaults. Only members have settings: a write checks membership in
the same transaction, and leaving a group forgets them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from im.clock import Clock
from im.db import MemberRow, MemberSettingsRow
from im.sqlservice import ServiceError
from im.v1 import group_pb2

MUTED_FOREVER = -1
IN_CHUNK = 900  # keys per IN (...) list, as in store.py

_settings = MemberSettingsRow.__table__


@dataclass(frozen=True, slots=True)
class Patch:
    """What a request changes; None = unchanged."""

    muted_until: int | None = None
    pinned: bool | None = None
    archived: bool | None = None
    name: str | None = None

    def values(self) -> dict[str, Any]:
        fields = {
            "muted_until": self.muted_until,
            "pinned": self.pinned,
            "archived": self.archived,
            "name": self.name,
        }
        return {k: v for k, v in fields.items() if v is not None}


def defaults(conversation_id: str, user_id: int) -> group_pb2.MemberSettings:
    return group_pb2.MemberSettings(conversation_id=conversation_id, user_id=user_id)


def _settings_pb(row: Any) -> group_pb2.MemberSettings:
    return group_pb2.MemberSettings(
        conversation_id=row.conversation_id,
        user_id=row.user_id,
        muted_until=row.muted_until,
        pinned=bool(row.pinned),
        archived=bool(row.archived),
        name=row.name,
        updated_at=row.updated_at,
    )


def is_muted(muted_until: int, now_ms: int) -> bool:
    return muted_until == MUTED_FOREVER or muted_until > now_ms


class SettingsStore:
    """Blocking, like GroupStore: run its methods in a thread."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    def set(self, conversation_id: str, user_id: int, patch: Patch) -> group_pb2.MemberSettings:
        try:
            return self._set_once(conversation_id, user_id, patch)
        except IntegrityError:
            # Another request inserted the row between our read and our insert: it is
            # there now, so the second pass updates it.
            return self._set_once(conversation_id, user_id, patch)

    def _set_once(
        self, conversation_id: str, user_id: int, patch: Patch
    ) -> group_pb2.MemberSettings:
        now = self._clock.wall_ms()
        changes = {**patch.values(), "updated_at": now}
        with Session(self._engine) as session, session.begin():
            if session.get(MemberRow, (conversation_id, user_id)) is None:
                raise ServiceError(
                    grpc.StatusCode.PERMISSION_DENIED, "not a member of this conversation"
                )
            key = (_settings.c.user_id == user_id, _settings.c.conversation_id == conversation_id)
            found = session.execute(update(_settings).where(*key).values(**changes)).rowcount
            if not found:
                row = {
                    "user_id": user_id,
                    "conversation_id": conversation_id,
                    "muted_until": 0,
                    "pinned": False,
                    "archived": False,
                    "name": "",
                    **changes,
                }
                session.execute(insert(_settings), [row])
            stored = session.execute(select(_settings).where(*key)).one()
            return _settings_pb(stored)

    def of_user(self, user_id: int) -> dict[str, group_pb2.MemberSettings]:
        """Every conversation the user set something for -> its settings."""
        with Session(self._engine) as session:
            rows = session.execute(select(_settings).where(_settings.c.user_id == user_id)).all()
        return {r.conversation_id: _settings_pb(r) for r in rows}

    def muted(self, wanted: Iterable[tuple[str, list[int]]]) -> dict[str, list[int]]:
        """Of each conversation's users, those muted now."""
        now = self._clock.wall_ms()
        out: dict[str, list[int]] = {}
        with Session(self._engine) as session:
            for conversation_id, user_ids in wanted:
                ids = list(dict.fromkeys(user_ids))
                for start in range(0, len(ids), IN_CHUNK):
                    rows = session.scalars(
                        select(_settings.c.user_id).where(
                            _settings.c.conversation_id == conversation_id,
                            _settings.c.user_id.in_(ids[start : start + IN_CHUNK]),
                            or_(
                                _settings.c.muted_until == MUTED_FOREVER,
                                _settings.c.muted_until > now,
                            ),
                        )
                    ).all()
                    if rows:
                        out.setdefault(conversation_id, []).extend(rows)
        return out

    def forget(self, conversation_id: str, user_id: int) -> None:
        """The member left (or was removed): a later rejoin starts from the defaults."""
        with self._engine.begin() as connection:
            connection.execute(
                delete(_settings).where(
                    _settings.c.user_id == user_id,
                    _settings.c.conversation_id == conversation_id,
                )
            )
