"""The user service over a real gRPC channel, backed by SQLite in a temp folder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, select

from im import sqlservice as app_module
from im.config import Settings
from im.db import UserRow
from im.v1 import user_pb2, user_pb2_grpc
from services.user.app import build

PASSWORD = "correct horse battery"


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "host": "127.0.0.1",
        "user_grpc_port": 0,
        # Cheap argon2 keeps the suite fast; the algorithm is the same.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 8192,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_user_service(
    settings: Settings,
) -> AsyncIterator[tuple[user_pb2_grpc.UserServiceStub, grpc.aio.Channel]]:
    app = build(settings)
    await app.start()
    channel = grpc.aio.insecure_channel(app.endpoints()["grpc"])
    try:
        yield user_pb2_grpc.UserServiceStub(channel), channel
    finally:
        await channel.close()
        await app.stop()


@pytest.fixture
async def users(tmp_path: Path) -> AsyncIterator[user_pb2_grpc.UserServiceStub]:
    async with running_user_service(make_settings(tmp_path)) as (stub, _):
        yield stub


async def register(
    stub: user_pb2_grpc.UserServiceStub,
    username: str,
    password: str = PASSWORD,
    display_name: str = "",
) -> user_pb2.User:
    reply = await stub.Register(
        user_pb2.RegisterRequest(username=username, password=password, display_name=display_name)
    )
    return reply.user


async def status_of(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call()
    return caught.value.code()


# ---------------------------------------------------------------------- Register


async def test_register_stores_lowercased_username_and_defaults_display_name(
    users: user_pb2_grpc.UserServiceStub,
) -> None:
    before_ms = int(time.time() * 1000)
    user = await register(users, "Alice.Smith")
    assert user.user_id > 0
    assert user.username == "alice.smith"
    assert user.display_name == "Alice.Smith"  # as typed: it is what people see
    assert before_ms - 1000 <= user.created_at <= int(time.time() * 1000) + 1000

    other = await register(users, "bob", display_name="  Bobby  ")
    assert other.display_name == "Bobby"
    assert other.user_id != user.user_id


@pytest.mark.parametrize(
    ("username", "password", "display_name"),
    [
        ("ab", PASSWORD, ""),  # username too short
        ("a" * 33, PASSWORD, ""),  # username too long
        ("bad name", PASSWORD, ""),  # space
        ("bad/name", PASSWORD, ""),  # slash
        ("line\n", PASSWORD, ""),  # a trailing newline must not slip past the pattern
        ("", PASSWORD, ""),
        ("carol", "short", ""),  # password under 8
        ("carol", "x" * 257, ""),  # password over 256
        ("carol", PASSWORD, "d" * 129),  # display name over 128
    ],
)
async def test_register_rejects_bad_shapes(
    users: user_pb2_grpc.UserServiceStub, username: str, password: str, display_name: str
) -> None:
    code = await status_of(lambda: register(users, username, password, display_name))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_register_accepts_boundary_lengths(users: user_pb2_grpc.UserServiceStub) -> None:
    await register(users, "abc", password="x" * 8, display_name="d" * 128)
    await register(users, "z" * 32, password="y" * 256)


async def test_duplicate_username_is_already_exists_case_insensitively(
    users: user_pb2_grpc.UserServiceStub,
) -> None:
    await register(users, "dave")
    assert await status_of(lambda: register(users, "DAVE")) == grpc.StatusCode.ALREADY_EXISTS


async def test_concurrent_registrations_of_one_name_admit_exactly_one(
    users: user_pb2_grpc.UserServiceStub,
) -> None:
    spellings = ["erin", "ERIN", "Erin", "eRin", "erIn", "eriN"]
    results = await asyncio.gather(
        *(register(users, name) for name in spellings), return_exceptions=True
    )
    created = [r for r in results if isinstance(r, user_pb2.User)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(created) == 1
    assert len(refused) == 5
    assert {r.code() for r in refused} == {grpc.StatusCode.ALREADY_EXISTS}


# ------------------------------------------------------------------ Authenticate


async def test_authenticate_accepts_the_right_password_with_any_case(
    users: user_pb2_grpc.UserServiceStub,
) -> None:
    user = await register(users, "frank")
    reply = await users.Authenticate(
        user_pb2.AuthenticateRequest(username="Frank", password=PASSWORD)
    )
    assert reply.user == user


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("grace", "wrong password"),  # known user, wrong password
        ("nobody", PASSWORD),  # unknown user
        ("grace", ""),  # empty password
        ("x", PASSWORD),  # a name that could never exist
        ("grace", "p" * 10_000),  # never hashed: over the length cap
    ],
)
async def test_authenticate_refuses_bad_credentials_alike(
    users: user_pb2_grpc.UserServiceStub, username: str, password: str
) -> None:
    await register(users, "grace")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.Authenticate(user_pb2.AuthenticateRequest(username=username, password=password))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # One message for every case: nothing tells which part was wrong.
    assert caught.value.details() == "wrong username or password"


async def test_authenticate_upgrades_a_hash_made_with_weaker_parameters(tmp_path: Path) -> None:
    async with running_user_service(make_settings(tmp_path)) as (stub, _):
        await register(stub, "heidi")

    stronger = make_settings(tmp_path, argon2_time_cost=2)
    async with running_user_service(stronger) as (stub, _):
        await stub.Authenticate(user_pb2.AuthenticateRequest(username="heidi", password=PASSWORD))
        # The upgraded hash still verifies.
        await stub.Authenticate(user_pb2.AuthenticateRequest(username="heidi", password=PASSWORD))

    engine = create_engine(stronger.resolved_database_url())
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                select(UserRow.password_hash).where(UserRow.username == "heidi")
            ).scalar_one()
    finally:
        engine.dispose()
    assert stored.startswith("$argon2id$")
    assert ",t=2," in stored


# ---------------------------------------------------------------------- GetUsers


async def test_get_users_by_ids_and_names_leaves_unknown_out(
    users: user_pb2_grpc.UserServiceStub,
) -> None:
    ivan = await register(users, "ivan")
    judy = await register(users, "judy")
    await register(users, "mallory")

    reply = await users.GetUsers(
        user_pb2.GetUsersRequest(
            user_ids=[judy.user_id, 999_999, judy.user_id], usernames=["IVAN", "ghost", "judy"]
        )
    )
    assert [u.user_id for u in reply.users] == [judy.user_id, ivan.user_id]

    empty = await users.GetUsers(user_pb2.GetUsersRequest())
    assert list(empty.users) == []


async def test_get_users_caps_one_call_at_a_thousand(users: user_pb2_grpc.UserServiceStub) -> None:
    await users.GetUsers(user_pb2.GetUsersRequest(user_ids=list(range(1, 1001))))
    code = await status_of(
        lambda: users.GetUsers(
            user_pb2.GetUsersRequest(user_ids=list(range(1, 1000)), usernames=["a", "b"])
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------- process plumbing


async def test_health_is_serving_and_the_bound_port_is_reported(tmp_path: Path) -> None:
    app = build(make_settings(tmp_path))
    await app.start()
    try:
        host, port = app.endpoints()["grpc"].rsplit(":", 1)
        assert host == "127.0.0.1"
        assert int(port) > 0
        async with grpc.aio.insecure_channel(app.endpoints()["grpc"]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "im.v1.UserService"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await app.stop()


async def test_health_follows_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    database_up = True
    monkeypatch.setattr(app_module, "DB_CHECK_SECONDS", 0.02)
    monkeypatch.setattr(app_module, "database_alive", lambda engine: database_up)
    app = build(make_settings(tmp_path))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.endpoints()["grpc"]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="im.v1.UserService")

            async def status_becomes(wanted: int) -> None:
                for _ in range(200):
                    if (await health.Check(request)).status == wanted:
                        return
                    await asyncio.sleep(0.01)
                raise AssertionError(f"health never became {wanted}")

            database_up = False
            await status_becomes(health_pb2.HealthCheckResponse.NOT_SERVING)
            database_up = True
            await status_becomes(health_pb2.HealthCheckResponse.SERVING)
    finally:
        await app.stop()
