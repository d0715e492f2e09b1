"""The group service over a real gRPC channel, backed by SQLite in a temp folder."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from im import sqlservice as app_module
from im.config import Settings
from im.ids import direct_conversation_id
from im.v1 import group_pb2
from services.group.app import build
from tests.services.group.helpers import (
    ADMIN,
    MEMBER,
    OWNER,
    Stub,
    add,
    create_group,
    cursors,
    make_admin,
    make_settings,
    member_count,
    remove,
    running_group_service,
    status_of,
    update_cursors,
)

# ------------------------------------------------------------- direct conversations


async def test_direct_conversation_is_created_once_for_either_order(groups: Stub) -> None:
    first = await groups.GetOrCreateDirect(group_pb2.GetOrCreateDirectRequest(user_a=7, user_b=3))
    again = await groups.GetOrCreateDirect(group_pb2.GetOrCreateDirectRequest(user_a=3, user_b=7))
    conversation = first.conversation
    assert conversation.conversation_id == direct_conversation_id(3, 7) == "d:3:7"
    assert conversation.kind == group_pb2.CONVERSATION_KIND_DIRECT
    assert conversation.member_count == 2
    assert again.conversation == conversation

    members = await groups.ListMembers(group_pb2.ListMembersRequest(conversation_id="d:3:7"))
    assert [(m.user_id, m.role) for m in members.members] == [(3, MEMBER), (7, MEMBER)]


async def test_concurrent_direct_creation_converges_on_one_conversation(groups: Stub) -> None:
    replies = await asyncio.gather(
        *(
            groups.GetOrCreateDirect(group_pb2.GetOrCreateDirectRequest(user_a=a, user_b=b))
            for a, b in [(11, 12), (12, 11)] * 5
        )
    )
    assert {r.conversation.conversation_id for r in replies} == {"d:11:12"}
    ids = await groups.ListMemberIds(group_pb2.ListMemberIdsRequest(conversation_id="d:11:12"))
    assert list(ids.user_ids) == [11, 12]


@pytest.mark.parametrize(("user_a", "user_b"), [(5, 5), (0, 5), (5, -1)])
async def test_direct_conversation_needs_two_distinct_positive_users(
    groups: Stub, user_a: int, user_b: int
) -> None:
    code = await status_of(
        lambda: groups.GetOrCreateDirect(
            group_pb2.GetOrCreateDirectRequest(user_a=user_a, user_b=user_b)
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------- groups


async def test_create_group_assigns_roles_and_dedupes_members(groups: Stub) -> None:
    conversation = await create_group(groups, owner=1, members=[3, 2, 3, 1, 2], name=" Team ")
    assert conversation.conversation_id.startswith("g:")
    assert conversation.kind == group_pb2.CONVERSATION_KIND_GROUP
    assert conversation.name == "Team"
    assert conversation.owner_id == 1
    assert conversation.member_count == 3

    reply = await groups.ListMembers(
        group_pb2.ListMembersRequest(conversation_id=conversation.conversation_id)
    )
    assert [(m.user_id, m.role) for m in reply.members] == [(1, OWNER), (2, MEMBER), (3, MEMBER)]

    fetched = await groups.GetConversation(
        group_pb2.GetConversationRequest(conversation_id=conversation.conversation_id)
    )
    assert fetched.conversation == conversation

    other = await create_group(groups)
    assert other.conversation_id != conversation.conversation_id


@pytest.mark.parametrize("name", ["", "   ", "n" * 256])
async def test_create_group_rejects_bad_names(groups: Stub, name: str) -> None:
    code = await status_of(lambda: create_group(groups, name=name))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_create_group_rejects_bad_ids(groups: Stub) -> None:
    assert (
        await status_of(lambda: create_group(groups, owner=0)) == grpc.StatusCode.INVALID_ARGUMENT
    )
    code = await status_of(lambda: create_group(groups, members=[2, 0]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_create_group_enforces_the_size_limit(groups: Stub) -> None:
    await create_group(groups, owner=1, members=list(range(2, 51)))  # exactly 50
    code = await status_of(lambda: create_group(groups, owner=1, members=list(range(2, 52))))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("conversation_id", ["g:424242", "d:1:2"])
async def test_get_conversation_not_found(groups: Stub, conversation_id: str) -> None:
    code = await status_of(
        lambda: groups.GetConversation(
            group_pb2.GetConversationRequest(conversation_id=conversation_id)
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("conversation_id", ["", "x:1", "d:2:1", "d:01:2", "g:abc"])
async def test_malformed_conversation_ids_are_invalid_arguments(
    groups: Stub, conversation_id: str
) -> None:
    code = await status_of(
        lambda: groups.GetConversation(
            group_pb2.GetConversationRequest(conversation_id=conversation_id)
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# ---------------------------------------------------------------------- AddMembers


async def test_add_members_starts_new_members_at_the_given_seq(groups: Stub) -> None:
    group = (await create_group(groups, owner=1, members=[2])).conversation_id
    added = await add(groups, group, actor=1, user_ids=[5, 2, 4, 5], at_seq=17)
    # Existing member 2 is ignored, the repeated 5 counted once.
    assert [(m.user_id, m.role) for m in added] == [(5, MEMBER), (4, MEMBER)]
    for member in added:
        assert (member.joined_seq, member.delivered_seq, member.read_seq) == (17, 17, 17)
        assert member.conversation_id == group
        assert member.joined_at > 0
    assert await member_count(groups, group) == 4
    assert await cursors(groups, group, 4) == (17, 17)
    assert await cursors(groups, group, 2) == (0, 0)  # untouched

    assert await add(groups, group, actor=1, user_ids=[2, 4]) == []
    assert await member_count(groups, group) == 4


async def test_add_members_checks_kind_permission_and_existence(
    groups: Stub, settings: Settings
) -> None:
    group = (await create_group(groups, owner=1, members=[2, 3])).conversation_id
    await groups.GetOrCreateDirect(group_pb2.GetOrCreateDirectRequest(user_a=1, user_b=2))

    async def code(conversation_id: str, actor: int) -> grpc.StatusCode:
        return await status_of(lambda: add(groups, conversation_id, actor, [9]))

    assert await code("d:1:2", actor=1) == grpc.StatusCode.FAILED_PRECONDITION
    assert await code(group, actor=2) == grpc.StatusCode.PERMISSION_DENIED  # plain member
    assert await code(group, actor=99) == grpc.StatusCode.PERMISSION_DENIED  # not a member
    assert await code("g:987654", actor=1) == grpc.StatusCode.NOT_FOUND
    bad = await status_of(lambda: add(groups, group, 1, [9, -4]))
    assert bad == grpc.StatusCode.INVALID_ARGUMENT

    make_admin(settings, group, 2)
    assert [m.user_id for m in await add(groups, group, actor=2, user_ids=[9])] == [9]


async def test_add_members_enforces_the_size_limit_all_or_nothing(groups: Stub) -> None:
    group = (await create_group(groups, owner=1, members=list(range(2, 41)))).conversation_id
    code = await status_of(lambda: add(groups, group, 1, list(range(100, 112))))  # 40 + 12
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert await member_count(groups, group) == 40
    assert len(await add(groups, group, 1, list(range(100, 110)))) == 10  # exactly 50
    assert await member_count(groups, group) == 50


async def test_concurrent_adds_keep_count_and_limit_exact(groups: Stub) -> None:
    group = (await create_group(groups, owner=1)).conversation_id
    batches = [list(range(100 + 10 * i, 110 + 10 * i)) for i in range(7)]  # 70 wanted
    results = await asyncio.gather(
        *(add(groups, group, 1, batch) for batch in batches), return_exceptions=True
    )
    accepted = [r for r in results if isinstance(r, list)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(accepted) == 4  # 1 + 4 * 10 fit under 50; a fifth batch would not
    assert {r.code() for r in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    ids = await groups.ListMemberIds(group_pb2.ListMemberIdsRequest(conversation_id=group))
    assert len(ids.user_ids) == await member_count(groups, group) == 41


async def test_adding_ten_thousand_members_in_one_call(tmp_path: Path) -> None:
    async with running_group_service(make_settings(tmp_path, max_group_size=20_000)) as stub:
        group = (await create_group(stub, owner=1)).conversation_id
        new_ids = list(range(1_000, 11_000))
        added = await add(stub, group, actor=1, user_ids=new_ids, at_seq=3)
        assert len(added) == 10_000
        assert await member_count(stub, group) == 10_001
        ids = await stub.ListMemberIds(group_pb2.ListMemberIdsRequest(conversation_id=group))
        assert list(ids.user_ids) == [1, *new_ids]
        # A repeat finds them all present: nothing added, count unchanged.
        assert await add(stub, group, actor=1, user_ids=new_ids) == []
        assert await member_count(stub, group) == 10_001


# --------------------------------------------------------------------- RemoveMember


async def test_remove_member_rules(groups: Stub, settings: Settings) -> None:
    group = (await create_group(groups, owner=1, members=[2, 3, 4, 5])).conversation_id
    make_admin(settings, group, 2)
    make_admin(settings, group, 5)

    async def code(actor: int, user_id: int, conversation_id: str = group) -> grpc.StatusCode:
        return await status_of(lambda: remove(groups, conversation_id, actor, user_id))

    assert await code(actor=3, user_id=4) == grpc.StatusCode.PERMISSION_DENIED  # plain member
    assert await code(actor=2, user_id=5) == grpc.StatusCode.PERMISSION_DENIED  # admin vs admin
    assert await code(actor=1, user_id=1) == grpc.StatusCode.FAILED_PRECONDITION  # owner leaving
    assert await code(actor=2, user_id=1) == grpc.StatusCode.FAILED_PRECONDITION  # owner removed
    assert await code(actor=1, user_id=42) == grpc.StatusCode.NOT_FOUND
    assert await code(actor=42, user_id=42) == grpc.StatusCode.NOT_FOUND  # leaving, never joined
    assert await code(actor=1, user_id=2, conversation_id="g:31337") == grpc.StatusCode.NOT_FOUND

    await remove(groups, group, actor=3, user_id=3)  # leave
    await remove(groups, group, actor=2, user_id=4)  # admin removes a member
    await remove(groups, group, actor=1, user_id=5)  # owner removes an admin
    ids = await groups.ListMemberIds(group_pb2.ListMemberIdsRequest(conversation_id=group))
    assert list(ids.user_ids) == [1, 2]
    assert await member_count(groups, group) == 2

    check = await groups.CheckMember(group_pb2.CheckMemberRequest(conversation_id=group, user_id=3))
    assert not check.is_member


async def test_nobody_leaves_a_direct_conversation(groups: Stub) -> None:
    await groups.GetOrCreateDirect(group_pb2.GetOrCreateDirectRequest(user_a=1, user_b=2))
    code = await status_of(lambda: remove(groups, "d:1:2", actor=1, user_id=1))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_remove_member_returns_the_removed_row(groups: Stub) -> None:
    group = (await create_group(groups, owner=1, members=[2])).conversation_id
    reply = await groups.RemoveMember(
        group_pb2.RemoveMemberRequest(conversation_id=group, actor_id=2, user_id=2)
    )
    assert [(m.user_id, m.role) for m in reply.members] == [(2, MEMBER)]


# ------------------------------------------------------------------- member listing


async def test_list_members_pages_by_user_id(groups: Stub) -> None:
    member_ids = list(range(30, 5, -1))  # 25 ids, given out of order
    group = (await create_group(groups, owner=1, members=member_ids)).conversation_id
    expected = [1, *sorted(member_ids)]

    seen: list[int] = []
    cursor = ""
    pages = 0
    while True:
        reply = await groups.ListMembers(
            group_pb2.ListMembersRequest(conversation_id=group, cursor=cursor, limit=10)
        )
        pages += 1
        seen += [m.user_id for m in reply.members]
        if not reply.next_cursor:
            break
        assert reply.next_cursor == str(seen[-1])
        cursor = reply.next_cursor
    assert seen == expected
    assert pages == 3

    everything = await groups.ListMembers(group_pb2.ListMembersRequest(conversation_id=group))
    assert [m.user_id for m in everything.members] == expected
    assert everything.next_cursor == ""

    # A page that ends exactly at the last member says it is done.
    exact = await groups.ListMembers(
        group_pb2.ListMembersRequest(conversation_id=group, limit=len(expected))
    )
    assert len(exact.members) == len(expected)
    assert exact.next_cursor == ""


async def test_list_members_errors(groups: Stub) -> None:
    group = (await create_group(groups)).conversation_id
    bad_cursor = await status_of(
        lambda: groups.ListMembers(group_pb2.ListMembersRequest(conversation_id=group, cursor="x"))
    )
    assert bad_cursor == grpc.StatusCode.INVALID_ARGUMENT
    missing = await status_of(
        lambda: groups.ListMembers(group_pb2.ListMembersRequest(conversation_id="g:5"))
    )
    assert missing == grpc.StatusCode.NOT_FOUND
    missing_ids = await status_of(
        lambda: groups.ListMemberIds(group_pb2.ListMemberIdsRequest(conversation_id="g:5"))
    )
    assert missing_ids == grpc.StatusCode.NOT_FOUND


async def test_list_user_conversations_carries_the_users_own_cursors(groups: Stub) -> None:
    group = (await create_group(groups, owner=1, members=[2], name="g")).conversation_id
    await groups.GetOrCreateDirect(group_pb2.GetOrCreateDirectRequest(user_a=2, user_b=3))
    await update_cursors(groups, (group, 2, 9, 4))

    reply = await groups.ListUserConversations(group_pb2.ListUserConversationsRequest(user_id=2))
    by_id = {uc.conversation.conversation_id: uc for uc in reply.conversations}
    assert set(by_id) == {group, "d:2:3"}
    assert by_id[group].conversation.name == "g"
    assert by_id[group].member.user_id == 2
    assert (by_id[group].member.delivered_seq, by_id[group].member.read_seq) == (9, 4)
    assert by_id["d:2:3"].conversation.kind == group_pb2.CONVERSATION_KIND_DIRECT

    nobody = await groups.ListUserConversations(group_pb2.ListUserConversationsRequest(user_id=777))
    assert list(nobody.conversations) == []


async def test_check_member(groups: Stub) -> None:
    group = (await create_group(groups, owner=1, members=[2])).conversation_id
    yes = await groups.CheckMember(group_pb2.CheckMemberRequest(conversation_id=group, user_id=1))
    assert yes.is_member
    assert (yes.member.user_id, yes.member.role) == (1, OWNER)
    for conversation_id, user_id in [(group, 3), ("g:1", 1), ("d:1:2", 1), ("junk", 1)]:
        reply = await groups.CheckMember(
            group_pb2.CheckMemberRequest(conversation_id=conversation_id, user_id=user_id)
        )
        assert not reply.is_member


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
            for service in ("", "im.v1.GroupService"):
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
            request = health_pb2.HealthCheckRequest(service="im.v1.GroupService")

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


# ------------------------------------------------- member versions, roles, receipts


async def test_member_version_moves_with_membership_and_answers_unchanged(groups: Stub) -> None:
    conv = await create_group(groups, owner=1, members=[2])
    first = await groups.ListMemberIds(
        group_pb2.ListMemberIdsRequest(conversation_id=conv.conversation_id)
    )
    assert list(first.user_ids) == [1, 2] and list(first.joined_seqs) == [0, 0]
    same = await groups.ListMemberIds(
        group_pb2.ListMemberIdsRequest(
            conversation_id=conv.conversation_id, known_version=first.member_version
        )
    )
    assert same.unchanged and not same.user_ids
    await add(groups, conv.conversation_id, 1, [3], at_seq=7)
    after_add = await groups.ListMemberIds(
        group_pb2.ListMemberIdsRequest(
            conversation_id=conv.conversation_id, known_version=first.member_version
        )
    )
    assert not after_add.unchanged
    assert after_add.member_version > first.member_version
    assert dict(zip(after_add.user_ids, after_add.joined_seqs, strict=True)) == {1: 0, 2: 0, 3: 7}
    await groups.RemoveMember(
        group_pb2.RemoveMemberRequest(conversation_id=conv.conversation_id, actor_id=1, user_id=2)
    )
    after_remove = await groups.ListMemberIds(
        group_pb2.ListMemberIdsRequest(conversation_id=conv.conversation_id)
    )
    assert list(after_remove.user_ids) == [1, 3]
    assert after_remove.member_version > after_add.member_version


async def test_history_visible_is_kept(groups: Stub) -> None:
    reply = await groups.CreateGroup(
        group_pb2.CreateGroupRequest(owner_id=1, name="open", member_ids=[2], history_visible=True)
    )
    got = await groups.GetConversation(
        group_pb2.GetConversationRequest(conversation_id=reply.conversation.conversation_id)
    )
    assert got.conversation.history_visible


async def test_only_the_owner_sets_roles(groups: Stub) -> None:
    conv = (await create_group(groups, owner=1, members=[2, 3])).conversation_id
    req = group_pb2.SetMemberRoleRequest
    promoted = await groups.SetMemberRole(
        req(conversation_id=conv, actor_id=1, user_id=2, role=ADMIN)
    )
    assert promoted.members[0].role == ADMIN
    # the new admin may now add members, but may not change roles
    await add(groups, conv, 2, [4])
    code = await status_of(
        lambda: groups.SetMemberRole(req(conversation_id=conv, actor_id=2, user_id=3, role=ADMIN))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code = await status_of(
        lambda: groups.SetMemberRole(req(conversation_id=conv, actor_id=1, user_id=1, role=MEMBER))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    code = await status_of(
        lambda: groups.SetMemberRole(req(conversation_id=conv, actor_id=1, user_id=3, role=OWNER))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
