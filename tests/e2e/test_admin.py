"""The admin API end to end, in both modes: disabling a user kicks its live socket and
refuses its logins (enabling undoes it), a delete with erase removes the bodies of its
messages from history, a deleted owner passes its group on and leaves it, and
bulk-imported users log in."""

from __future__ import annotations

import asyncio

import pytest
from argon2 import PasswordHasher

from im import events
from im.client import AdminClient, ApiError, ImClient
from im.events import ERASED
from im.ids import direct_conversation_id
from im.v1 import wire_pb2
from tests.e2e.helpers import ADMIN_TOKEN, PASSWORD, new_user, take_messages, unique

pytestmark = pytest.mark.e2e


def admin_of(target) -> AdminClient:  # type: ignore[no-untyped-def]
    return AdminClient(target.gateway, ADMIN_TOKEN, actor="e2e")


async def test_disable_kicks_the_live_socket_and_refuses_login_until_enabled(target):
    alice = await new_user(target.gateway, "adm")
    async with admin_of(target) as admin:
        try:
            await alice.connect()
            sessions = await admin.sessions(alice.user_id)
            assert [s["online"] for s in sessions["sessions"]] == [True]

            done = await admin.disable(alice.user_id)
            assert done["user"]["disabled"] and done["sessions_ended"] == 1
            await asyncio.wait_for(alice.connection.wait_closed(), 10)
            assert alice.connection.kick is not None
            assert alice.connection.kick.reason == wire_pb2.KICK_REASON_TOKEN_REVOKED
            again = ImClient(target.gateway)
            with pytest.raises(ApiError) as refused:
                await again.login(alice.username, PASSWORD, "dev2")
            assert (refused.value.status, refused.value.code) == (403, "account_disabled")
            with pytest.raises(ApiError) as old_token:
                await alice.gateway.me()
            assert old_token.value.status == 401

            await admin.enable(alice.user_id)
            await again.login(alice.username, PASSWORD, "dev2")
            await again.connect()
            await again.close()
        finally:
            await alice.close()


async def test_delete_with_erase_removes_the_bodies_from_history(target):
    alice = await new_user(target.gateway, "era")
    bob = await new_user(target.gateway, "erb")
    try:
        await alice.connect()
        await bob.connect()
        conv = direct_conversation_id(alice.user_id, bob.user_id)
        await alice.send(conv, "secret one")
        await bob.send(conv, "bob's reply")
        await alice.send(conv, "secret two")
        await take_messages(bob, 3)
        async with admin_of(target) as admin:
            done = await admin.delete(alice.user_id, erase_messages=True)
        assert done["user"]["deleted"] and done["messages_erased"] == 2
        history = (await bob.gateway.history(conv)).messages
        assert [(m.sender_id, m.body, m.content_type) for m in history] == [
            (alice.user_id, b"", ERASED),
            (bob.user_id, b"bob's reply", "text/plain"),
            (alice.user_id, b"", ERASED),
        ]
        shown = await bob.gateway.user(alice.user_id)
        assert shown["deleted"] is True and shown["display_name"] == "Deleted user"
    finally:
        await alice.close()
        await bob.close()


async def test_bulk_import_then_login(target):
    prefix = unique("imp")
    hashed = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
    users = [{"username": f"{prefix}_{i}", "password_hash": hashed} for i in range(300)]
    users.append({"username": f"{prefix}_7", "password_hash": hashed})  # repeated
    async with admin_of(target) as admin:
        # Two requests, one after the other: the repeat comes in the second, when the
        # name is taken.
        result = await admin.import_users(users, chunk=200, concurrency=1)
    assert result["imported"] == 300
    assert [(e["index"], e["code"]) for e in result["errors"]] == [(300, "username_taken")]
    client = ImClient(target.gateway)
    try:
        await client.login(f"{prefix}_299", PASSWORD, "dev1")
        await client.connect()
    finally:
        await client.close()


async def test_a_deleted_owner_passes_its_group_on_and_leaves(target):
    owner = await new_user(target.gateway, "dlo")
    bob = await new_user(target.gateway, "dlb")
    try:
        group = await owner.gateway.create_group("crew", [bob.user_id])
        gid = group["conversation_id"]
        await bob.connect()
        async with admin_of(target) as admin:
            done = await admin.delete(owner.user_id)
        assert done["groups_left"] == 1
        # bob's device sees both changes live, in the group's seq order.
        got = [m for m in await take_messages(bob, 2) if m.conversation_id == gid]
        assert [m.content_type for m in got] == [
            events.GROUP_OWNER_TRANSFERRED,
            events.GROUP_MEMBER_LEFT,
        ]
        assert got[1].seq == got[0].seq + 1
        info = await bob.gateway.group(gid)
        assert (info["my_role"], info["member_count"]) == ("owner", 1)
        await bob.send(gid, "still here")  # the group lives on
    finally:
        await owner.close()
        await bob.close()
