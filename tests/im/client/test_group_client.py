"""GatewayClient's group and receipt methods against the real gateway (the harness of
tests/services/gateway: real user and group services), plus ``send_to_group`` on the
fake connector."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from im.client import ApiError, GatewayClient, ImClient, as_group_id
from im.v1 import group_pb2, wire_pb2
from tests.services.gateway import conftest as gateway_harness
from tests.services.gateway.helpers import message

if TYPE_CHECKING:
    from conftest import FakeIm

    from tests.services.gateway.conftest import Suite

PASSWORD = "secret-pass-1"

# The real-gateway fixtures live with the gateway's own tests; naming them here makes
# pytest offer them to this module too.
suite = gateway_harness.suite
settings_overrides = gateway_harness.settings_overrides


async def logged_in(harness: Suite, username: str) -> GatewayClient:
    client = GatewayClient(str(harness.client.base_url))
    await client.register(username, PASSWORD)
    await client.login(username, PASSWORD, "laptop")
    return client


def user_id(client: GatewayClient) -> int:
    assert client.last_login is not None
    return client.last_login.user_id


async def test_group_lifecycle(suite: Suite) -> None:
    alice = await logged_in(suite, "alice")
    bob = await logged_in(suite, "bob")
    carol = await logged_in(suite, "carol")
    ids = {name: user_id(c) for name, c in [("a", alice), ("b", bob), ("c", carol)]}
    try:
        group = await alice.create_group("team", [ids["b"]])
        gid = group["conversation_id"]
        assert (group["my_role"], group["member_count"], group["history_visible"]) == (
            "owner",
            2,
            False,
        )
        # A group can be named by its conversation id or just its number.
        assert (await bob.group(gid))["my_role"] == "member"
        assert (await bob.group(int(gid[2:])))["conversation_id"] == gid

        assert await alice.add_members(gid, [ids["c"], ids["b"]]) == [ids["c"]]
        with pytest.raises(ApiError) as info:
            await bob.add_members(gid, [ids["a"]])
        assert (info.value.status, info.value.code) == (403, "forbidden")
        with pytest.raises(ApiError) as info:
            await alice.add_members(gid, [987654])
        assert (info.value.status, info.value.code) == (422, "unknown_users")

        promoted = await alice.set_role(gid, ids["b"], "admin")
        assert (promoted["user_id"], promoted["role"]) == (ids["b"], "admin")
        page = await carol.members(gid, limit=2)
        assert [m["user_id"] for m in page.members] == sorted(ids.values())[:2]
        assert page.next_cursor is not None
        rest = await carol.members(gid, cursor=page.next_cursor, limit=2)
        assert rest.next_cursor is None
        roles = {m["user_id"]: m["role"] async for m in carol.members_all(gid, page_size=1)}
        assert roles == {ids["a"]: "owner", ids["b"]: "admin", ids["c"]: "member"}

        await bob.remove_member(gid, ids["c"])
        with pytest.raises(ApiError) as info:
            await carol.group(gid)
        assert info.value.code == "forbidden"
        await bob.leave_group(gid)
        with pytest.raises(ApiError) as info:
            await alice.leave_group(gid)
        assert (info.value.status, info.value.code) == (409, "owner_cannot_leave")
        assert (await alice.group(gid))["member_count"] == 1
    finally:
        for client in (alice, bob, carol):
            await client.aclose()


async def test_receipts_and_members_all(suite: Suite) -> None:
    alice = await logged_in(suite, "alice")
    bob = await logged_in(suite, "bob")
    alice_id, bob_id = user_id(alice), user_id(bob)
    try:
        fake = list(range(30_001, 30_251))  # the group service takes any id
        created = await suite.groups.CreateGroup(
            group_pb2.CreateGroupRequest(owner_id=alice_id, name="big", member_ids=[bob_id, *fake])
        )
        gid = created.conversation.conversation_id
        everyone = [m["user_id"] async for m in alice.members_all(gid, page_size=100)]
        assert everyone == sorted([alice_id, bob_id, *fake])

        await suite.store.insert_many([message(gid, 1, alice_id)])
        await bob.read(gid, 1)
        summary = await alice.receipts(gid, 1, limit=5)
        assert (summary["sender_id"], summary["read_count"], summary["unread_count"]) == (
            alice_id,
            1,
            250,
        )
        assert summary["read_by"] == {"user_ids": [bob_id], "next_cursor": None}
        unread = summary["unread"]
        assert unread["user_ids"] == fake[:5] and unread["next_cursor"] == str(fake[4])
        more = await alice.receipts(gid, 1, cursor=unread["next_cursor"], limit=5, list="unread")
        assert more["unread"]["user_ids"] == fake[5:10] and more["read_by"] is None
        with pytest.raises(ApiError) as info:
            await alice.receipts(gid, 2)
        assert (info.value.status, info.value.code) == (404, "not_found")
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_request_shapes() -> None:
    seen: list[tuple[str, str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.raw_path.decode(), request.content))
        if request.method == "DELETE" or request.url.path.endswith("/leave"):
            return httpx.Response(204)
        if request.url.path.endswith("/members") and request.method == "POST":
            return httpx.Response(200, json={"added": [5]})
        return httpx.Response(200, json={"members": [], "next_cursor": None})

    async with GatewayClient(
        "http://gw.test", token="t", transport=httpx.MockTransport(handler)
    ) as gw:
        assert await gw.add_members(7, [5]) == [5]
        await gw.remove_member("g:7", 5)
        await gw.leave_group("7")
        page = await gw.members("g:7", cursor="12", limit=50_000)
        assert page.members == [] and page.next_cursor is None
        await gw.receipts("g:7", 3, limit=0, list="read")
    assert seen == [
        ("POST", "/v1/groups/g:7/members", b'{"user_ids":[5]}'),
        ("DELETE", "/v1/groups/g:7/members/5", b""),
        ("POST", "/v1/groups/g:7/leave", b""),
        ("GET", "/v1/groups/g:7/members?limit=1000&cursor=12", b""),
        ("GET", "/v1/conversations/g:7/receipts?seq=3&limit=1&list=read", b""),
    ]


def test_as_group_id() -> None:
    assert as_group_id(7) == as_group_id("7") == as_group_id("g:7") == as_group_id(" g:7 ") == "g:7"


async def test_send_to_group(fake_im: FakeIm) -> None:
    fake_im.add_user("alice")
    async with ImClient(fake_im.gateway_url) as client:
        await client.login("alice", "pw", "phone")
        await client.connect(sync=False)
        ack = await client.send_to_group(42, "hello group")
        assert ack.conversation_id == "g:42"
        (frame,) = fake_im.session().of_kind("send")
        assert (frame.send.conversation_id, frame.send.body) == ("g:42", b"hello group")
        assert frame.send.content_type == "text/plain"
        assert isinstance(ack, wire_pb2.SendAck)
