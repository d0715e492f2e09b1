"""GET /v1/conversations/{id}/presence is bounded: groups over presence_max_members are
refused with a clear code, and each user reads presence at a limited rate."""

from __future__ import annotations

import pytest

from im.v1 import group_pb2
from tests.services.gateway.conftest import Suite
from tests.services.gateway.helpers import assert_problem


def presence_url(conversation_id: str) -> str:
    return f"/v1/conversations/{conversation_id}/presence"


@pytest.mark.parametrize("settings_overrides", [{"presence_max_members": 3}])
async def test_a_group_over_the_presence_limit_is_refused_clearly(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    made = await suite.groups.CreateGroup(
        group_pb2.CreateGroupRequest(owner_id=alice_id, name="team", member_ids=[90001, 90002])
    )
    gid = made.conversation.conversation_id
    r = await suite.client.get(presence_url(gid), headers=alice)
    assert r.status_code == 200, r.text
    assert [m["user_id"] for m in r.json()["members"]] == [90001, 90002]

    await suite.groups.AddMembers(
        group_pb2.AddMembersRequest(conversation_id=gid, actor_id=alice_id, user_ids=[90003])
    )
    r = await suite.client.get(presence_url(gid), headers=alice)
    problem = assert_problem(r, 422, "presence_group_too_large")
    assert "3 members" in problem["detail"]


@pytest.mark.parametrize("settings_overrides", [{"presence_reads_per_minute": 2}])
async def test_presence_reads_are_rate_limited_per_user(suite: Suite) -> None:
    _alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    r = await suite.client.post("/v1/conversations/direct", json={"peer_id": bob_id}, headers=alice)
    cid = r.json()["conversation_id"]
    for _ in range(2):
        r = await suite.client.get(presence_url(cid), headers=alice)
        assert r.status_code == 200, r.text
    r = await suite.client.get(presence_url(cid), headers=alice)
    assert_problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    r = await suite.client.get(presence_url(cid), headers=bob)  # bob's own allowance
    assert r.status_code == 200, r.text
