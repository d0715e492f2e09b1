"""The user service's admin half (UserAdminService) over a real gRPC channel, on
SQLite in a temp folder: disable, enable, reset, delete, sessions, bulk import."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from argon2 import PasswordHasher

from im.v1 import admin_pb2, admin_pb2_grpc, user_pb2, user_pb2_grpc
from tests.services.user.test_user_service import (
    PASSWORD,
    make_settings,
    register,
    running_user_service,
    status_of,
)

FAR = 4_000_000_000_000  # ms: a refresh token that has not expired


@dataclass
class Stubs:
    users: user_pb2_grpc.UserServiceStub
    admin: admin_pb2_grpc.UserAdminServiceStub


@pytest.fixture
async def stubs(tmp_path: Path) -> AsyncIterator[Stubs]:
    async with running_user_service(make_settings(tmp_path)) as (stub, channel):
        yield Stubs(stub, admin_pb2_grpc.UserAdminServiceStub(channel))


async def open_session(stubs: Stubs, user_id: int, device: str, sid: str) -> None:
    await stubs.users.CreateSession(
        user_pb2.CreateSessionRequest(
            user_id=user_id,
            device_id=device,
            session_id=sid,
            refresh_token_hash=hashlib.sha256(sid.encode()).hexdigest(),
            expires_at=FAR,
        )
    )


async def login(stubs: Stubs, username: str, password: str = PASSWORD) -> user_pb2.User:
    request = user_pb2.AuthenticateRequest(username=username, password=password)
    return (await stubs.users.Authenticate(request)).user


async def test_disable_revokes_sessions_refuses_login_and_new_sessions(stubs: Stubs) -> None:
    user = await register(stubs.users, "alice")
    await open_session(stubs, user.user_id, "phone", "s1")
    await open_session(stubs, user.user_id, "laptop", "s2")

    change = await stubs.admin.SetDisabled(
        admin_pb2.SetUserDisabledRequest(user_id=user.user_id, disabled=True)
    )
    assert change.user.disabled and not change.user.deleted
    assert {s.session_id for s in change.revoked} == {"s1", "s2"}
    assert await status_of(lambda: login(stubs, "alice")) == grpc.StatusCode.PERMISSION_DENIED
    # The wrong password still looks like any wrong password.
    assert await status_of(lambda: login(stubs, "alice", "wrong-one-1")) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    code = await status_of(lambda: open_session(stubs, user.user_id, "tablet", "s3"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    listed = await stubs.admin.ListSessions(admin_pb2.AdminUserRequest(user_id=user.user_id))
    assert list(listed.sessions) == []

    change = await stubs.admin.SetDisabled(
        admin_pb2.SetUserDisabledRequest(user_id=user.user_id, disabled=False)
    )
    assert not change.user.disabled and not change.revoked
    assert (await login(stubs, "alice")).user_id == user.user_id


async def test_reset_password_generates_one_or_takes_the_given_one(stubs: Stubs) -> None:
    user = await register(stubs.users, "bob")
    await open_session(stubs, user.user_id, "phone", "s1")
    change = await stubs.admin.ResetPassword(admin_pb2.ResetPasswordRequest(user_id=user.user_id))
    assert [s.session_id for s in change.revoked] == ["s1"]
    generated = change.generated_password
    assert len(generated) >= 20
    assert await status_of(lambda: login(stubs, "bob")) == grpc.StatusCode.UNAUTHENTICATED
    assert (await login(stubs, "bob", generated)).user_id == user.user_id

    change = await stubs.admin.ResetPassword(
        admin_pb2.ResetPasswordRequest(user_id=user.user_id, new_password="chosen-pass-1")
    )
    assert change.generated_password == ""
    assert (await login(stubs, "bob", "chosen-pass-1")).user_id == user.user_id
    short = admin_pb2.ResetPasswordRequest(user_id=user.user_id, new_password="short")
    assert await status_of(lambda: stubs.admin.ResetPassword(short)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_delete_renames_frees_the_name_and_is_final(stubs: Stubs) -> None:
    user = await register(stubs.users, "carol")
    await open_session(stubs, user.user_id, "phone", "s1")
    change = await stubs.admin.DeleteUser(admin_pb2.AdminUserRequest(user_id=user.user_id))
    assert change.user.deleted and change.user.disabled
    assert change.user.username == f"deleted:{user.user_id}"
    assert change.user.display_name == "Deleted user"
    assert [s.session_id for s in change.revoked] == ["s1"]
    assert await status_of(lambda: login(stubs, "carol")) == grpc.StatusCode.UNAUTHENTICATED
    # Looked up by id (a message's sender), it is there, flagged.
    found = await stubs.users.GetUsers(user_pb2.GetUsersRequest(user_ids=[user.user_id]))
    assert found.users[0].deleted
    # The name is free again; the deleted account cannot come back.
    assert (await register(stubs.users, "carol")).user_id != user.user_id
    enable = admin_pb2.SetUserDisabledRequest(user_id=user.user_id, disabled=False)
    assert await status_of(lambda: stubs.admin.SetDisabled(enable)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    reset = admin_pb2.ResetPasswordRequest(user_id=user.user_id)
    assert await status_of(lambda: stubs.admin.ResetPassword(reset)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    again = await stubs.admin.DeleteUser(admin_pb2.AdminUserRequest(user_id=user.user_id))
    assert again.user.deleted and not again.revoked


async def test_unknown_user_is_not_found(stubs: Stubs) -> None:
    for call in (
        lambda: stubs.admin.DeleteUser(admin_pb2.AdminUserRequest(user_id=999)),
        lambda: stubs.admin.ListSessions(admin_pb2.AdminUserRequest(user_id=999)),
        lambda: stubs.admin.SetDisabled(admin_pb2.SetUserDisabledRequest(user_id=999)),
    ):
        assert await status_of(call) == grpc.StatusCode.NOT_FOUND
    bad = admin_pb2.AdminUserRequest(user_id=0)
    assert await status_of(lambda: stubs.admin.DeleteUser(bad)) == grpc.StatusCode.INVALID_ARGUMENT


async def test_sessions_list_open_ones_newest_first(stubs: Stubs) -> None:
    user = await register(stubs.users, "dave")
    await open_session(stubs, user.user_id, "phone", "s1")
    await open_session(stubs, user.user_id, "laptop", "s2")
    listed = await stubs.admin.ListSessions(admin_pb2.AdminUserRequest(user_id=user.user_id))
    assert listed.user.username == "dave"
    assert {s.device_id for s in listed.sessions} == {"phone", "laptop"}
    for s in listed.sessions:
        assert s.created_at > 0 and s.last_seen_at >= s.created_at and s.expires_at == FAR
    created = [s.created_at for s in listed.sessions]
    assert created == sorted(created, reverse=True)


async def test_import_reports_bad_rows_and_imports_the_rest(stubs: Stubs) -> None:
    await register(stubs.users, "taken")
    hashed = PasswordHasher(time_cost=1, memory_cost=8192).hash("imported-pass-1")
    users = [
        admin_pb2.ImportUser(username="Imp1", display_name="One", password_hash=hashed),
        admin_pb2.ImportUser(username="taken", password_hash=hashed),
        admin_pb2.ImportUser(username="imp2", password="plain-pass-22"),
        admin_pb2.ImportUser(username="IMP1", password_hash=hashed),  # repeats row 0
        admin_pb2.ImportUser(username="imp3"),  # no password: no login until a reset
        admin_pb2.ImportUser(username="x"),  # too short
        admin_pb2.ImportUser(username="imp4", password_hash="$2b$12$bcrypt-is-not-taken"),
        admin_pb2.ImportUser(username="imp5", password="p1-long-enough", password_hash=hashed),
    ]
    result = await stubs.admin.ImportUsers(admin_pb2.ImportUsersRequest(users=users))
    assert [(u.index, u.username) for u in result.imported] == [
        (0, "imp1"),
        (2, "imp2"),
        (4, "imp3"),
    ]
    assert [(e.index, e.code) for e in result.errors] == [
        (1, "username_taken"),
        (3, "duplicate_in_request"),
        (5, "invalid"),
        (6, "invalid"),
        (7, "invalid"),
    ]
    assert (await login(stubs, "imp1", "imported-pass-1")).display_name == "One"
    assert (await login(stubs, "imp2", "plain-pass-22")).username == "imp2"
    imp3 = next(u for u in result.imported if u.username == "imp3")
    assert await status_of(lambda: login(stubs, "imp3", "anything-at-all")) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    reset = admin_pb2.ResetPasswordRequest(user_id=imp3.user_id, new_password="now-it-has-1")
    await stubs.admin.ResetPassword(reset)
    assert (await login(stubs, "imp3", "now-it-has-1")).user_id == imp3.user_id


async def test_import_of_many_goes_in_chunks(stubs: Stubs) -> None:
    hashed = PasswordHasher(time_cost=1, memory_cost=8192).hash("bulk-pass-123")
    users = [admin_pb2.ImportUser(username=f"bulk{i}", password_hash=hashed) for i in range(2500)]
    result = await stubs.admin.ImportUsers(admin_pb2.ImportUsersRequest(users=users))
    assert len(result.imported) == 2500 and not result.errors
    assert len({u.user_id for u in result.imported}) == 2500
    assert (await login(stubs, "bulk2499", "bulk-pass-123")).username == "bulk2499"
    again = await stubs.admin.ImportUsers(admin_pb2.ImportUsersRequest(users=users[:3]))
    assert [e.code for e in again.errors] == ["username_taken"] * 3


async def test_import_refuses_too_many_rows_at_once(stubs: Stubs) -> None:
    users = [admin_pb2.ImportUser(username=f"u{i:05d}") for i in range(10_001)]
    code = await status_of(
        lambda: stubs.admin.ImportUsers(admin_pb2.ImportUsersRequest(users=users))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
