"""A deleted user leaves its groups (services/gateway/departure.py): over the admin
REST API, with the real user and group services, and the system events it publishes."""

from __future__ import annotations

import pytest

from im.v1 import group_pb2
from services.gateway.departure import GroupDepartures, successor
from services.gateway.errors import ApiError
from tests.services.gateway.conftest import Suite
from tests.services.gateway.test_admin_api import ADMIN, TOKEN
from tests.services.gateway.test_group_lifecycle_api import event_tap, events_of, kinds_and_bodies
from tests.services.gateway.test_groups_api import create, members_of

ADMIN_ROLE, MEMBER_ROLE = group_pb2.MEMBER_ROLE_ADMIN, group_pb2.MEMBER_ROLE_MEMBER


@pytest.fixture
def settings_overrides() -> dict:
    return {"admin_token": TOKEN, "admin_grpc_port": 0}


def member(user_id: int, role: int, joined_at: int) -> group_pb2.Member:
    return group_pb2.Member(user_id=user_id, role=role, joined_at=joined_at)


def test_the_successor_is_the_first_admin_else_the_first_member() -> None:
    owner = member(1, group_pb2.MEMBER_ROLE_OWNER, 10)
    early, late_admin = member(2, MEMBER_ROLE, 20), member(3, ADMIN_ROLE, 30)
    assert successor([owner, early, late_admin], leaving=1) == 3
    assert successor([owner, member(4, MEMBER_ROLE, 25), early], leaving=1) == 2
    assert successor([member(6, MEMBER_ROLE, 5), member(5, MEMBER_ROLE, 5)], leaving=9) == 5
    assert successor([owner], leaving=1) is None


async def test_a_deleted_user_leaves_its_groups_passing_on_the_ones_it_owns(suite: Suite) -> None:
    carol_id, carol = await suite.user("carol")
    bob_id, bob = await suite.user("bob")
    dave_id, dave = await suite.user("dave")
    # carol owns "owned" (bob a member since the start, dave made admin later), is a
    # member of bob's "joined", and alone in "solo".
    owned = (await create(suite, carol, "owned", member_ids=[bob_id, dave_id]))["conversation_id"]
    r = await suite.client.patch(
        f"/v1/groups/{owned}/members/{dave_id}", json={"role": "admin"}, headers=carol
    )
    assert r.status_code == 200, r.text
    joined = (await create(suite, bob, "joined", member_ids=[carol_id]))["conversation_id"]
    solo = (await create(suite, carol, "solo"))["conversation_id"]
    tap = await event_tap(suite)

    r = await suite.client.delete(f"/v1/admin/users/{carol_id}", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["groups_left"] == 3

    owned_members = await members_of(suite, bob, owned)
    assert set(owned_members) == {bob_id, dave_id}
    assert owned_members[dave_id]["role"] == "owner"  # the admin, though bob came first
    assert set(await members_of(suite, bob, joined)) == {bob_id}
    sent = await events_of(tap)
    by_group = {gid: [m for m in sent if m.conversation_id == gid] for gid in (owned, joined, solo)}
    assert kinds_and_bodies(by_group[owned]) == [
        ("owner_transferred", {"actor_id": carol_id, "user_ids": [dave_id]}),
        ("member_left", {"actor_id": carol_id, "user_ids": [carol_id]}),
    ]
    assert kinds_and_bodies(by_group[joined]) == [
        ("member_left", {"actor_id": carol_id, "user_ids": [carol_id]}),
    ]
    assert kinds_and_bodies(by_group[solo]) == [("dissolved", {"actor_id": carol_id})]
    assert {m.sender_id for m in sent} == {carol_id}

    # Again: nothing is left to leave, and nothing is said.
    r = await suite.client.delete(f"/v1/admin/users/{carol_id}", headers=ADMIN)
    assert r.status_code == 200 and r.json()["groups_left"] == 0
    assert await events_of(tap) == []
    r = await suite.client.get(f"/v1/groups/{owned}", headers=dave)
    assert r.json()["my_role"] == "owner" and r.json()["member_count"] == 2


class _Calls:
    async def rpc(self, call, request, overrides=None):  # type: ignore[no-untyped-def]
        return await call(request)


class _Groups:
    """ListUserConversations of a user in three groups (one dissolved) and a 1:1."""

    async def ListUserConversations(self, request):  # type: ignore[no-untyped-def]
        def item(cid: str, kind: int, dissolved: bool = False) -> group_pb2.UserConversation:
            conversation = group_pb2.Conversation(
                conversation_id=cid, kind=kind, dissolved=dissolved
            )
            membership = group_pb2.Member(user_id=request.user_id, role=MEMBER_ROLE)
            return group_pb2.UserConversation(conversation=conversation, member=membership)

        group = group_pb2.CONVERSATION_KIND_GROUP
        return group_pb2.ListUserConversationsResponse(
            conversations=[
                item("g:1", group),
                item("g:2", group),
                item("g:3", group, dissolved=True),
                item("d:1:7", group_pb2.CONVERSATION_KIND_DIRECT),
                item("g:4", group),
            ]
        )


class _Ops:
    def __init__(self) -> None:
        self.left: list[str] = []

    async def leave_group(self, user_id: int, group_id: str) -> None:
        if group_id == "g:2":
            raise ApiError(503, "unavailable", "group service is unavailable")
        self.left.append(group_id)


async def test_a_group_that_fails_stops_no_other_and_the_failure_is_told() -> None:
    ops = _Ops()
    groups = _Groups()
    departures = GroupDepartures(lambda: groups, ops, None, _Calls())  # type: ignore[arg-type]
    with pytest.raises(ApiError) as failed:
        await departures.leave_all(7)
    assert failed.value.status == 503
    assert ops.left == ["g:1", "g:4"]  # not the dissolved group, nor the 1:1
