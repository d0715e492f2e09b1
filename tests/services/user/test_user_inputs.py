"""The user service refuses ids no column holds and display names unsafe to show."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from im.v1 import user_pb2, user_pb2_grpc
from tests.services.user.test_user_service import make_settings, running_user_service

PASSWORD = "correct horse battery"


@pytest.fixture
async def users(tmp_path: Path) -> AsyncIterator[user_pb2_grpc.UserServiceStub]:
    async with running_user_service(make_settings(tmp_path)) as (stub, _):
        yield stub


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


@pytest.mark.parametrize(
    "display_name",
    ["evil\x00", "\x1b]0;owned\x07", "abc\u202etxt.exe", "\u2067rtl", "a\u200eb", "a\u2028b"],
)
async def test_display_name_with_control_or_bidi_characters_is_invalid(
    users: user_pb2_grpc.UserServiceStub, display_name: str
) -> None:
    request = user_pb2.RegisterRequest(
        username="mallory", password=PASSWORD, display_name=display_name
    )
    assert await _code(users.Register(request)) == grpc.StatusCode.INVALID_ARGUMENT
    # Not registered: the name is still free for a clean registration.
    clean = user_pb2.RegisterRequest(username="mallory", password=PASSWORD, display_name="Mal")
    assert (await users.Register(clean)).user.display_name == "Mal"


async def test_display_name_with_accents_and_emoji_is_kept(
    users: user_pb2_grpc.UserServiceStub,
) -> None:
    name = "Zoë \U0001f469\u200d\U0001f4bb"
    request = user_pb2.RegisterRequest(username="zoe", password=PASSWORD, display_name=name)
    assert (await users.Register(request)).user.display_name == name


@pytest.mark.parametrize("user_id", [0, -5, -(2**63)])
async def test_lookup_of_an_impossible_id_is_invalid(
    users: user_pb2_grpc.UserServiceStub, user_id: int
) -> None:
    request = user_pb2.GetUsersRequest(user_ids=[user_id])
    assert await _code(users.GetUsers(request)) == grpc.StatusCode.INVALID_ARGUMENT
    largest = await users.GetUsers(user_pb2.GetUsersRequest(user_ids=[2**63 - 1]))
    assert list(largest.users) == []
