"""The connector's authorizer against a real group service."""

from __future__ import annotations

from pathlib import Path

from im.clock import FakeClock
from im.v1 import group_pb2, user_pb2, user_pb2_grpc
from services.connector.authorizer import Authorizer, Signal
from services.user.app import build as build_user
from tests.services.connector.helpers import group_service


async def test_direct_conversation_with_a_peer_past_the_id_range_is_refused(
    tmp_path: Path,
) -> None:
    async with group_service(tmp_path) as (settings, channels, _):
        authorizer = Authorizer(settings, channels, FakeClock())
        # Parses as a 1:1 of user 1, but its peer fits no column and no request: it
        # used to fail building the peer look-up, answered "try again" forever.
        assert await authorizer.may_send(1, f"d:1:{2**66}") is False
        assert await authorizer.members_of(1, [f"d:1:{2**66}"]) == set()
        assert authorizer.cached(1, f"d:1:{2**66}") is False


async def test_a_blocked_pair_may_ack_but_not_send_until_unblocked(tmp_path: Path) -> None:
    async with group_service(tmp_path) as (settings, channels, stub):
        await stub.GetOrCreateDirect(group_pb2.GetOrCreateDirectRequest(user_a=1, user_b=2))
        authorizer = Authorizer(settings, channels, FakeClock())
        assert await authorizer.members_of(2, ["d:1:2"]) == {"d:1:2"}
        assert authorizer.cached_send(2, "d:1:2") is None  # membership says nothing of blocks
        assert await authorizer.may_send(2, "d:1:2") is True

        await stub.Block(group_pb2.BlockRequest(user_id=1, target_id=2))
        authorizer.forget("d:1:2")  # what the block's membership event does
        assert await authorizer.may_send(2, "d:1:2") is False
        assert await authorizer.may_send(1, "d:1:2") is False  # the blocker neither
        assert authorizer.cached_send(2, "d:1:2") is False
        assert authorizer.cached(2, "d:1:2") is True  # still a member: acks and reads go
        assert await authorizer.members_of(2, ["d:1:2"]) == {"d:1:2"}  # acks still go

        await stub.Unblock(group_pb2.BlockRequest(user_id=1, target_id=2))
        authorizer.forget("d:1:2")
        assert await authorizer.may_send(2, "d:1:2") is True


async def test_the_first_send_to_a_blocking_peer_creates_nothing_it_can_use(
    tmp_path: Path,
) -> None:
    async with group_service(tmp_path) as (settings, channels, stub):
        user_app = build_user(settings.model_copy(update={"user_grpc_port": 0}))
        await user_app.start()
        settings = settings.model_copy(update={"user_service_addr": user_app.endpoints()["grpc"]})
        try:
            users = user_pb2_grpc.UserServiceStub(channels.get(settings.user_addr()))
            ids = []
            for name in ("blocker", "stranger"):
                reply = await users.Register(
                    user_pb2.RegisterRequest(username=name, password="password123")
                )
                ids.append(reply.user.user_id)
            blocker, stranger = ids
            await stub.Block(group_pb2.BlockRequest(user_id=blocker, target_id=stranger))
            authorizer = Authorizer(settings, channels, FakeClock())
            cid = f"d:{min(ids)}:{max(ids)}"
            assert await authorizer.may_send(stranger, cid) is False
        finally:
            await user_app.stop()


async def test_a_dissolved_group_is_read_only_for_sends_only(tmp_path: Path) -> None:
    async with group_service(tmp_path) as (settings, channels, stub):
        made = await stub.CreateGroup(
            group_pb2.CreateGroupRequest(owner_id=1, name="team", member_ids=[2])
        )
        gid = made.conversation.conversation_id
        authorizer = Authorizer(settings, channels, FakeClock())
        assert await authorizer.may_send(2, gid) is True
        assert authorizer.cached_send(2, gid) is True

        await stub.DissolveGroup(group_pb2.DissolveGroupRequest(conversation_id=gid, actor_id=1))
        authorizer.forget(gid)  # what the membership event does
        assert await authorizer.may_send(2, gid) is False
        assert authorizer.cached_send(2, gid) is False and authorizer.is_read_only(gid)
        # Still a member: acks and reads go on.
        assert authorizer.cached(2, gid) is True
        assert await authorizer.members_of(2, [gid]) == {gid}

        # Told by the delivery of the dissolved event, before any lookup.
        fresh = Authorizer(settings, channels, FakeClock())
        assert await fresh.may_send(2, gid) is False  # (a lookup says so as well)
        other = Authorizer(settings, channels, FakeClock())
        other.mark_read_only("g:99")
        assert other.cached_send(1, "g:99") is None  # nothing cached: it will ask
        assert other.is_read_only("g:99")


async def test_signals_are_judged_as_sends_but_create_no_conversation(tmp_path: Path) -> None:
    async with group_service(tmp_path) as (settings, channels, stub):
        await stub.GetOrCreateDirect(group_pb2.GetOrCreateDirectRequest(user_a=1, user_b=2))
        made = await stub.CreateGroup(
            group_pb2.CreateGroupRequest(owner_id=1, name="team", member_ids=[2])
        )
        gid = made.conversation.conversation_id
        authorizer = Authorizer(settings, channels, FakeClock())
        assert await authorizer.members_of(2, ["d:1:2"]) == {"d:1:2"}  # membership cached
        assert await authorizer.may_signal(2, "d:1:2") is Signal.ALLOWED
        assert await authorizer.may_signal(2, gid) is Signal.ALLOWED

        await stub.Block(group_pb2.BlockRequest(user_id=1, target_id=2))
        await stub.DissolveGroup(group_pb2.DissolveGroupRequest(conversation_id=gid, actor_id=1))
        authorizer.forget("d:1:2")  # what the membership events do
        authorizer.forget(gid)
        for user in (1, 2):  # the blocked and the blocker
            assert await authorizer.may_signal(user, "d:1:2") is Signal.REFUSED
            assert await authorizer.may_signal(user, gid) is Signal.REFUSED
        assert await authorizer.may_signal(3, "d:1:2") is Signal.REFUSED  # a stranger

        # The user's own 1:1 that no message created: nobody to tell, and still nothing
        # there (may_send would create it).
        assert await authorizer.may_signal(1, "d:1:5") is Signal.NOBODY
        reply = await stub.CheckMember(
            group_pb2.CheckMemberRequest(conversation_id="d:1:5", user_id=1)
        )
        assert not reply.is_member
        assert authorizer.cached(1, "d:1:5") is None  # its first send still asks
