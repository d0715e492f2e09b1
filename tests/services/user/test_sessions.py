"""The user service's sessions: the table (with explicit times) and the RPCs over a
real gRPC channel, on SQLite in a temp folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from im.db import SessionRow, create_schema, make_engine
from im.v1 import user_pb2, user_pb2_grpc
from services.user.sessions import SessionTable
from tests.services.user.test_user_service import (
    PASSWORD,
    make_settings,
    register,
    running_user_service,
    status_of,
)

NOW = 1_800_000_000_000
DAY = 86_400_000


def h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
def table(tmp_path: Path) -> SessionTable:
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    create_schema(engine)
    return SessionTable(engine)


def open_ids(table: SessionTable, user_id: int) -> set[str]:
    with Session(table._engine) as db:
        rows = db.scalars(select(SessionRow).where(SessionRow.user_id == user_id))
        return {r.id for r in rows if r.revoked_at is None and r.expires_at > NOW}


def test_rotation_spends_the_old_token_and_a_reuse_revokes_the_session(
    table: SessionTable,
) -> None:
    assert table.create(1, "phone", "s1", h("t1"), NOW, NOW + DAY) == []
    row, reused = table.rotate(h("t1"), h("t2"), NOW + 1, NOW + 2 * DAY)
    assert row is not None and not reused
    assert (row.id, row.user_id, row.device_id, row.expires_at) == ("s1", 1, "phone", NOW + 2 * DAY)
    row, reused = table.rotate(h("t2"), h("t3"), NOW + 2, NOW + 2 * DAY)
    assert row is not None and row.id == "s1" and not reused
    # t2 again: it was spent a moment ago, so someone holds a copy. The session ends.
    row, reused = table.rotate(h("t2"), h("t4"), NOW + 3, NOW + 2 * DAY)
    assert row is not None and row.id == "s1" and reused
    assert open_ids(table, 1) == set()
    # ...for the thief's newest token too.
    assert table.rotate(h("t3"), h("t5"), NOW + 4, NOW + 2 * DAY) == (None, False)
    assert table.rotate(h("unknown"), h("t6"), NOW + 4, NOW + 2 * DAY) == (None, False)


def test_an_expired_session_cannot_be_refreshed(table: SessionTable) -> None:
    table.create(1, "phone", "s1", h("t1"), NOW, NOW + DAY)
    assert table.rotate(h("t1"), h("t2"), NOW + DAY, NOW + 2 * DAY) == (None, False)


def test_a_new_login_of_a_device_revokes_its_previous_session(table: SessionTable) -> None:
    table.create(1, "phone", "s1", h("t1"), NOW, NOW + DAY)
    table.create(1, "laptop", "s2", h("t2"), NOW, NOW + DAY)
    table.create(2, "phone", "s3", h("t3"), NOW, NOW + DAY)  # another user's phone
    revoked = table.create(1, "phone", "s4", h("t4"), NOW + 1, NOW + DAY)
    assert [r.id for r in revoked] == ["s1"]
    assert open_ids(table, 1) == {"s2", "s4"}
    assert open_ids(table, 2) == {"s3"}
    assert table.rotate(h("t1"), h("t5"), NOW + 2, NOW + DAY) == (None, False)
    # Rows that can never be used again are dropped at the user's next login.
    table.create(1, "tablet", "s5", h("t5"), NOW + DAY + 1, NOW + 2 * DAY)
    with Session(table._engine) as db:
        left = set(db.scalars(select(SessionRow.id).where(SessionRow.user_id == 1)))
    assert left == {"s5"}


def test_revoke_one_all_or_all_but_one(table: SessionTable) -> None:
    for i, device in enumerate(["a", "b", "c", "d"]):
        table.create(1, device, f"s{i}", h(f"t{i}"), NOW, NOW + DAY)
    assert [r.id for r in table.revoke(1, session_id="s0", now=NOW)] == ["s0"]
    assert table.revoke(1, session_id="s0", now=NOW) == []  # already
    assert table.revoke(2, session_id="s1", now=NOW) == []  # not user 2's
    assert {r.id for r in table.revoke(1, except_session_id="s3", now=NOW)} == {"s1", "s2"}
    assert open_ids(table, 1) == {"s3"}
    assert [r.id for r in table.revoke(1, now=NOW)] == ["s3"]


async def test_change_password_checks_the_current_one_and_revokes_the_others(
    tmp_path: Path,
) -> None:
    async with running_user_service(make_settings(tmp_path)) as (stub, _):
        user = await register(stub, "alice")
        for sid, device in (("s1", "phone"), ("s2", "laptop"), ("s3", "tablet")):
            await stub.CreateSession(
                user_pb2.CreateSessionRequest(
                    user_id=user.user_id,
                    device_id=device,
                    session_id=sid,
                    refresh_token_hash=h(sid),
                    expires_at=2**50,
                )
            )

        def change(current: str, new: str) -> object:
            return stub.ChangePassword(
                user_pb2.ChangePasswordRequest(
                    user_id=user.user_id,
                    current_password=current,
                    new_password=new,
                    keep_session_id="s1",
                )
            )

        assert await status_of(lambda: change("wrong password", "new password 1")) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert await status_of(lambda: change(PASSWORD, "short")) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        reply = await change(PASSWORD, "new password 1")
        assert {s.session_id for s in reply.revoked} == {"s2", "s3"}
        assert (
            await status_of(
                lambda: stub.Authenticate(
                    user_pb2.AuthenticateRequest(username="alice", password=PASSWORD)
                )
            )
            == grpc.StatusCode.UNAUTHENTICATED
        )
        await stub.Authenticate(
            user_pb2.AuthenticateRequest(username="alice", password="new password 1")
        )
        # s1 goes on: its refresh token still rotates.
        rotated = await stub.RotateSession(
            user_pb2.RotateSessionRequest(
                refresh_token_hash=h("s1"), new_refresh_token_hash=h("x"), expires_at=2**50
            )
        )
        assert rotated.session.session_id == "s1" and not rotated.reused


async def test_session_rpcs_refuse_malformed_requests(
    tmp_path: Path,
) -> None:
    async with running_user_service(make_settings(tmp_path)) as (stub, _):
        stub: user_pb2_grpc.UserServiceStub
        bad = user_pb2.CreateSessionRequest(user_id=1, device_id="d", session_id="s")
        assert await status_of(lambda: stub.CreateSession(bad)) == grpc.StatusCode.INVALID_ARGUMENT
        unknown = user_pb2.RotateSessionRequest(
            refresh_token_hash=h("nope"), new_refresh_token_hash=h("x"), expires_at=2**50
        )
        assert await status_of(lambda: stub.RotateSession(unknown)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )


@pytest.mark.integration
def test_concurrent_logins_of_many_users_on_mariadb_all_open_sessions(mysql_url: str) -> None:
    """InnoDB takes gap locks on the (user, device) index for each login's clean-up, so
    logins of neighbouring users deadlock each other now and then; each such victim is
    run again, and every login gets its session."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import delete

    engine = make_engine(mysql_url)
    create_schema(engine)
    table = SessionTable(engine)
    base = 10**15 + uuid.uuid4().int % 10**12 * 1000  # users of this run only
    users = [base + i for i in range(48)]

    def login(user_id: int, round_: int) -> None:
        token = f"{user_id}-{round_}"
        table.create(user_id, "phone", uuid.uuid4().hex, h(token), NOW + round_, NOW + DAY)

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            for round_ in range(4):
                list(pool.map(login, users, [round_] * len(users)))
        for user_id in users:
            assert len(open_ids(table, user_id)) == 1, user_id
    finally:
        with engine.begin() as connection:
            connection.execute(delete(SessionRow).where(SessionRow.user_id.in_(users)))
        engine.dispose()
