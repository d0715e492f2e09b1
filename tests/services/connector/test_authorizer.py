"""The connector's authorizer against a real group service."""

from __future__ import annotations

from pathlib import Path

from im.clock import FakeClock
from im.grpcutil import ChannelPool
from services.connector.authorizer import Authorizer
from services.group.app import build as build_group
from tests.services.group.helpers import make_settings


async def test_direct_conversation_with_a_peer_past_the_id_range_is_refused(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    group = build_group(settings)
    await group.start()
    settings = settings.model_copy(update={"group_service_addr": group.endpoints()["grpc"]})
    channels = ChannelPool.for_settings(settings)
    try:
        authorizer = Authorizer(settings, channels, FakeClock())
        # Parses as a 1:1 of user 1, but its peer fits no column and no request: it
        # used to fail building the peer look-up, answered "try again" forever.
        assert await authorizer.may_send(1, f"d:1:{2**66}") is False
        assert await authorizer.members_of(1, [f"d:1:{2**66}"]) == set()
        assert authorizer.cached(1, f"d:1:{2**66}") is False
    finally:
        await channels.close()
        await group.stop()
