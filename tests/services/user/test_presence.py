"""Presence settings of the user service: visibility and a last-seen time that only
moves forward, kept in SQL."""

from __future__ import annotations

import grpc
import pytest

from im.v1 import user_pb2
from tests.services.user.test_user_service import make_settings, running_user_service


async def test_unknown_users_are_visible_and_never_seen(tmp_path):
    async with running_user_service(make_settings(tmp_path)) as (stub, _):
        reply = await stub.PresenceGetInfo(user_pb2.PresenceInfoRequest(user_ids=[5, 3, 5]))
        assert [(u.user_id, u.visible, u.last_seen_ms) for u in reply.users] == [
            (5, True, 0),
            (3, True, 0),
        ]


async def test_hide_and_last_seen_are_kept_and_last_seen_only_moves_forward(tmp_path):
    settings = make_settings(tmp_path)
    async with running_user_service(settings) as (stub, _):
        await stub.PresenceRecordLastSeen(
            user_pb2.PresenceLastSeenRequest(user_id=7, last_seen_ms=2000)
        )
        await stub.PresenceRecordLastSeen(
            user_pb2.PresenceLastSeenRequest(user_id=7, last_seen_ms=1000)
        )
        info = await stub.PresenceSetVisible(
            user_pb2.PresenceSetVisibleRequest(user_id=7, visible=False)
        )
        assert (info.visible, info.last_seen_ms) == (False, 2000)
    async with running_user_service(settings) as (stub, _):  # after a restart
        (info,) = (await stub.PresenceGetInfo(user_pb2.PresenceInfoRequest(user_ids=[7]))).users
        assert (info.visible, info.last_seen_ms) == (False, 2000)


async def test_bad_requests_are_refused(tmp_path):
    async with running_user_service(make_settings(tmp_path)) as (stub, _):
        for call, request in [
            (stub.PresenceGetInfo, user_pb2.PresenceInfoRequest(user_ids=[0])),
            (stub.PresenceGetInfo, user_pb2.PresenceInfoRequest(user_ids=list(range(1, 1002)))),
            (stub.PresenceSetVisible, user_pb2.PresenceSetVisibleRequest(user_id=-1)),
            (stub.PresenceRecordLastSeen, user_pb2.PresenceLastSeenRequest(user_id=1)),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(request)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
