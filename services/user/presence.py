"""Presence settings of the user service: who shows presence, and when each user was
last online. Durable in the SQL database of both modes (SQLite standalone, MySQL
distributed), so a last-seen time outlives restarts of every process and of Redis."""

from __future__ import annotations

import asyncio

import grpc
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from im.db import PresenceRow
from im.sqlservice import ServiceError, rpc_errors
from im.v1 import user_pb2
from im.validation import InvalidInput, is_id, require_ids

MAX_IDS_PER_CALL = 1000
_rpc = rpc_errors("user")


class PresenceTable:
    """The presence table. Blocking SQLAlchemy calls: run them in a worker thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, user_ids: list[int]) -> dict[int, PresenceRow]:
        if not user_ids:
            return {}
        with Session(self._engine) as session:
            rows = session.scalars(select(PresenceRow).where(PresenceRow.user_id.in_(user_ids)))
            return {r.user_id: r for r in rows}

    def set_visible(self, user_id: int, visible: bool) -> PresenceRow:
        return self._upsert(user_id, {"visible": visible}, None)

    def record_last_seen(self, user_id: int, last_seen_ms: int) -> None:
        # Only forward: two connectors may report one user's offline out of order.
        self._upsert(
            user_id, {"last_seen_ms": last_seen_ms}, PresenceRow.last_seen_ms < last_seen_ms
        )

    def _upsert(self, user_id: int, values: dict, condition) -> PresenceRow:  # type: ignore[no-untyped-def]
        for _attempt in range(2):
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                where = [PresenceRow.user_id == user_id]
                if condition is not None:
                    where.append(condition)
                session.execute(update(PresenceRow).where(*where).values(**values))
                row = session.get(PresenceRow, user_id)
                if row is not None:
                    return row
            try:
                with Session(self._engine, expire_on_commit=False) as session, session.begin():
                    row = PresenceRow(
                        user_id=user_id,
                        visible=values.get("visible", True),
                        last_seen_ms=values.get("last_seen_ms", 0),
                    )
                    session.add(row)
                return row
            except IntegrityError:
                continue  # inserted by a concurrent call: update that row
        raise ServiceError(grpc.StatusCode.ABORTED, "presence row changed meanwhile; retry")


def info_pb(user_id: int, row: PresenceRow | None) -> user_pb2.PresenceInfo:
    if row is None:
        return user_pb2.PresenceInfo(user_id=user_id, visible=True)
    return user_pb2.PresenceInfo(
        user_id=user_id, visible=row.visible, last_seen_ms=row.last_seen_ms
    )


def _require_user(user_id: int) -> None:
    if not is_id(user_id):
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "user_id must be a positive id")


class PresenceRpcs:
    """The presence RPCs of im.v1.UserService (mixed into UserServicer)."""

    _presence: PresenceTable

    @_rpc
    async def PresenceGetInfo(
        self, request: user_pb2.PresenceInfoRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.PresenceInfoResponse:
        if len(request.user_ids) > MAX_IDS_PER_CALL:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_IDS_PER_CALL} user ids per call"
            )
        try:
            user_ids = list(dict.fromkeys(require_ids(request.user_ids, "user_ids")))
        except InvalidInput as exc:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        rows = await asyncio.to_thread(self._presence.get, user_ids)
        return user_pb2.PresenceInfoResponse(users=[info_pb(u, rows.get(u)) for u in user_ids])

    @_rpc
    async def PresenceSetVisible(
        self, request: user_pb2.PresenceSetVisibleRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.PresenceInfo:
        _require_user(request.user_id)
        row = await asyncio.to_thread(self._presence.set_visible, request.user_id, request.visible)
        return info_pb(request.user_id, row)

    @_rpc
    async def PresenceRecordLastSeen(
        self, request: user_pb2.PresenceLastSeenRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.PresenceLastSeenResponse:
        _require_user(request.user_id)
        if request.last_seen_ms <= 0:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "last_seen_ms must be positive")
        await asyncio.to_thread(
            self._presence.record_last_seen, request.user_id, request.last_seen_ms
        )
        return user_pb2.PresenceLastSeenResponse()
