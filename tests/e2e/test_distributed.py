"""The 1:1 path across processes on the real servers: 1 gateway, 1 user, 1 group,
2 connectors, 2 routers, each its own process (im.cluster), on MariaDB, Redis, the
MongoDB-protocol server, the Kafka-protocol broker and ZooKeeper."""

from __future__ import annotations

import asyncio
import signal

import pytest
from kafka.partitioner.default import murmur2

from im.adapters.zk_registry import ZkRegistry
from im.client import ImClient
from im.cluster import Cluster
from im.ids import direct_conversation_id
from tests.e2e.helpers import PASSWORD, new_user, take_messages

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def kill(cluster: Cluster, name: str) -> None:
    cluster.kill(name, signal.SIGKILL)
    cluster.procs[name].killed = True  # type: ignore[attr-defined]


async def login(cluster: Cluster, prefix: str) -> ImClient:
    return await new_user(cluster.gateway_url, prefix)


async def login_elsewhere(cluster: Cluster, prefix: str, other: ImClient) -> ImClient:
    """A user the gateway assigned to another connector than ``other``'s. Assignment
    follows load figures that lag a few seconds, so try a few new users."""
    for _ in range(10):
        client = await login(cluster, prefix)
        if client.login_result.connector.id != other.login_result.connector.id:
            return client
        await client.close()
    raise AssertionError("the gateway kept assigning one connector")


async def test_users_on_different_connectors_chat_both_ways(cluster):
    alice = await login(cluster, "alice")
    bob = await login_elsewhere(cluster, "bob", alice)
    try:
        assert alice.login_result.connector.id != bob.login_result.connector.id
        await alice.connect()
        await bob.connect()
        ack = await alice.send_to_user(bob.username, "across connectors")
        (got,) = await take_messages(bob, 1)
        assert (got.msg_id, got.seq, got.body) == (ack.msg_id, 1, b"across connectors")
        reply = await bob.send_to_user(alice.username, "and back")
        got = await take_messages(alice, 2)  # her own echo first, then bob's reply
        assert [m.seq for m in got] == [1, 2] and got[1].msg_id == reply.msg_id
    finally:
        await alice.close()
        await bob.close()


async def test_offline_sync_after_reconnect(cluster):
    alice = await login(cluster, "alice")
    bob = await login(cluster, "bob")
    try:
        await alice.connect()
        await bob.connect()
        conv = await alice.direct_conversation_with(bob.username)
        await alice.send(conv, "first")
        await take_messages(bob, 1)
        await bob.close()

        sent = [await alice.send(conv, f"missed {i}") for i in range(5)]
        bob2 = ImClient(cluster.gateway_url)
        await bob2.login(bob.username, PASSWORD, "dev1")
        await bob2.connect()
        got = await take_messages(bob2, 5)
        assert [m.msg_id for m in got] == [a.msg_id for a in sent]
        assert [m.seq for m in got] == [2, 3, 4, 5, 6]
        await bob2.close()
    finally:
        await alice.close()


def partition_of(conversation_id: str, partitions: int = 8) -> int:
    """The partition kafka-python's default partitioner picks for this key."""
    return (murmur2(conversation_id.encode()) & 0x7FFFFFFF) % partitions


async def test_a_router_killed_mid_stream_loses_nothing(cluster):
    """SIGKILL one router while pairs are sending: the other router takes its partitions
    over; every message sent is stored once, numbered without gaps, and seen once.

    The conversations cover both halves of the partitions (the two routers split them
    by range), so whichever router dies owned some of them; sending goes on well past
    the kill, so messages of the dead router's conversations wait for the takeover.
    """
    pairs: list[tuple[ImClient, ImClient, str]] = []
    halves: set[int] = set()
    while len(pairs) < 4 or halves != {0, 1}:
        sender, receiver = await login(cluster, "snd"), await login(cluster, "rcv")
        conv = direct_conversation_id(sender.user_id, receiver.user_id)
        half = partition_of(conv) // 4
        if len(pairs) >= 3 and half in halves and len(halves) == 1:
            continue  # keep looking for a conversation in the other half
        pairs.append((sender, receiver, conv))
        halves.add(half)
        assert len(pairs) < 12, "could not cover both partition halves"
    per_pair = 60
    try:
        for sender, receiver, _conv in pairs:
            await sender.connect()
            await receiver.connect()

        async def stream(sender: ImClient, conv: str) -> list[int]:
            msg_ids = []
            for i in range(per_pair):
                msg_ids.append((await sender.send(conv, f"m{i}", ack_timeout=10)).msg_id)
                await asyncio.sleep(0.05)  # about 3 s of sending: the kill lands mid-stream
            return msg_ids

        senders = [asyncio.create_task(stream(s, conv)) for s, _r, conv in pairs]
        await asyncio.sleep(1.0)
        kill(cluster, "router-1")
        sent = await asyncio.gather(*senders)

        total = 0
        for (_sender, receiver, conv), msg_ids in zip(pairs, sent, strict=True):
            got = await take_messages(receiver, per_pair, timeout=60)
            assert [m.msg_id for m in got] == msg_ids
            assert [m.seq for m in got] == list(range(1, per_pair + 1))
            history = [m async for m in receiver.gateway.history_all(conv, 0)]
            assert [m.msg_id for m in history] == msg_ids  # stored once each, no gaps
            total += len(history)
        print(
            f"router SIGKILL test: {len(pairs)} conversations on both partition halves, "
            f"{total} messages sent, {total} stored once, {total} seen once"
        )
    finally:
        for s, r, _conv in pairs:
            await s.close()
            await r.close()


async def test_a_killed_connector_leaves_the_registry_and_its_users_sync(cluster):
    alice = await login(cluster, "alice")
    bob = await login_elsewhere(cluster, "bob", alice)
    registry = ZkRegistry(cluster.zk_hosts, cluster.zk_root)
    try:
        await alice.connect()
        await bob.connect()
        victim = bob.login_result.connector.id
        survivor = alice.login_result.connector.id
        assert victim != survivor
        assert victim in {c.connector_id for c in await registry.connectors()}

        kill(cluster, victim)
        for _ in range(100):  # session timeout (4 s) plus a tick or two
            if victim not in {c.connector_id for c in await registry.connectors()}:
                break
            await asyncio.sleep(0.1)
        assert victim not in {c.connector_id for c in await registry.connectors()}

        conv = await alice.direct_conversation_with(bob.username)
        sent = [await alice.send(conv, f"while down {i}") for i in range(3)]

        bob2 = ImClient(cluster.gateway_url)
        await bob2.login(bob.username, PASSWORD, "dev1")
        assert bob2.login_result.connector.id == survivor
        await bob2.connect()
        got = await take_messages(bob2, 3)
        assert [m.msg_id for m in got] == [a.msg_id for a in sent]
        await bob2.close()
    finally:
        await registry.close()
        await alice.close()
        await bob.close()
