"""A 10,000-member group with a few hundred connected devices, in both modes.

Members are real users, created through the admin API's bulk import (one argon2 hash
made here for all of them: registering 10,000 one by one spent most of the test's time
hashing), and log in like any user; the group is built in pages of 5,000. Every
connected device must show every message exactly once, and the receipts query pages
through 10,000 members in bounded pages.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from im import events
from im.auth import password_hasher
from im.client import AdminClient, ImClient
from im.config import Settings
from tests.e2e.harness import start_cluster, start_suite, stop_cluster, stop_suite
from tests.e2e.helpers import ADMIN_TOKEN, PASSWORD, take_messages, unique

pytestmark = pytest.mark.e2e

MEMBERS = int(os.environ.get("IM_TEST_GROUP_MEMBERS", "10000"))
CONNECTED = int(os.environ.get("IM_TEST_GROUP_CONNECTED", "200"))
MESSAGES = 10
PAGE = 1000
# A cheap argon2 for the test users' logins (the imported hash is made with the same
# cost, so a login does not rehash it).
FAST = {
    "argon2_time_cost": "1",
    "argon2_memory_kib": "1024",
    "log_level": "WARNING",
    "admin_token": ADMIN_TOKEN,
}


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("standalone"),
        pytest.param("distributed", marks=pytest.mark.integration),
    ],
)
def gateway(request, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    if request.param == "standalone":
        suite = start_suite(tmp_path_factory.mktemp("large"), **FAST)
        yield suite.gateway
        assert stop_suite(suite) == 0
    else:
        cluster = start_cluster(tmp_path_factory, request.getfixturevalue("real_server"), **FAST)
        yield cluster.gateway_url
        stop_cluster(cluster)


async def import_many(gateway: str, count: int) -> list[tuple[str, int]]:
    """``count`` users, all with PASSWORD, by bulk import: (username, user_id) each."""
    prefix = unique("m")
    settings = Settings(argon2_time_cost=1, argon2_memory_kib=1024)
    hashed = password_hasher(settings).hash(PASSWORD)
    rows = [{"username": f"{prefix}_{i}", "password_hash": hashed} for i in range(count)]
    async with AdminClient(gateway, ADMIN_TOKEN, actor="large-group-test") as admin:
        result = await admin.import_users(rows)
    assert not result["errors"], result["errors"][:5]
    ids = {u["username"]: u["user_id"] for u in result["users"]}
    return [(row["username"], ids[row["username"]]) for row in rows]


async def test_ten_thousand_members_few_hundred_connected(gateway, capsys):
    started = time.perf_counter()
    users = await import_many(gateway, MEMBERS)
    registered = time.perf_counter()

    owner_name, _owner_id = users[0]
    owner = ImClient(gateway)
    await owner.login(owner_name, PASSWORD, "owner")
    others = [uid for _n, uid in users[1:]]
    group = await owner.gateway.create_group("everyone", others[:5000])
    conv = group["conversation_id"]
    adds = range(5000, len(others), 5000)
    for start in adds:
        await owner.gateway.add_members(conv, others[start : start + 5000])
    assert (await owner.gateway.group(conv))["member_count"] == MEMBERS
    built = time.perf_counter()

    devices: list[ImClient] = []
    try:
        for name, _uid in users[1 : CONNECTED + 1]:
            client = ImClient(gateway)
            await client.login(name, PASSWORD, "dev")
            devices.append(client)
        gate = asyncio.Semaphore(50)  # devices come online in waves, not all at once

        async def connect(device: ImClient) -> None:
            async with gate:
                await device.connect()

        await asyncio.gather(*(connect(d) for d in devices))
        await owner.connect()
        connected = time.perf_counter()

        sent = [(await owner.send(conv, f"to everyone {i}")).msg_id for i in range(MESSAGES)]
        # Each page of members added is a system event before the messages.
        results = await asyncio.gather(
            *(take_messages(d, len(adds) + MESSAGES, timeout=120) for d in devices)
        )
        delivered = time.perf_counter()
        for everything in results:
            got = everything[len(adds) :]
            assert all(events.is_group_event(m.content_type) for m in everything[: len(adds)])
            # Exactly once on screen, in order: nothing missing, nothing twice.
            assert [m.msg_id for m in got] == sent
            assert [m.seq for m in got] == list(range(len(adds) + 1, len(adds) + MESSAGES + 1))

        readers = devices[:50]
        await asyncio.gather(*(r.gateway.read(conv, MESSAGES) for r in readers))
        read_ids, unread_ids = [], []
        cursor = None
        while True:
            page = await owner.gateway.receipts(
                conv, MESSAGES, cursor=cursor, limit=PAGE, list="unread"
            )
            assert len(page["unread"]["user_ids"]) <= PAGE  # bounded pages
            unread_ids += page["unread"]["user_ids"]
            cursor = page["unread"]["next_cursor"]
            if not cursor:
                break
        summary = await owner.gateway.receipts(conv, MESSAGES, limit=PAGE, list="read")
        read_ids = summary["read_by"]["user_ids"]
        assert summary["read_count"] == len(readers)
        assert summary["unread_count"] == MEMBERS - 1 - len(readers)
        assert sorted(read_ids) == sorted(r.user_id for r in readers)
        assert len(unread_ids) == summary["unread_count"]
        assert not set(read_ids) & set(unread_ids)
        finished = time.perf_counter()
        with capsys.disabled():
            print(
                f"\nlarge group: {MEMBERS} members, {CONNECTED} connected, "
                f"{MESSAGES} messages -> {MESSAGES * CONNECTED} deliveries; "
                f"import {registered - started:.1f}s, build {built - registered:.1f}s, "
                f"connect {connected - built:.1f}s, deliver {delivered - connected:.1f}s, "
                f"receipts {finished - delivered:.1f}s, total {finished - started:.1f}s"
            )
    finally:
        await asyncio.gather(*(d.close() for d in devices), return_exceptions=True)
        await owner.close()
