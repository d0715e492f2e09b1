"""A deleted user leaves its groups (services/gateway/departure.py): over the admin
REST API, with the real user and group services, and the system events it publishes."""

from __future__ import annotations

import pytest

from im.v1 import group_pb2
from services.gateway.departure import successor
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
