"""One contract for the registry (connectors, routers, node-id leases): the in-process
``MemoryRegistry`` and ``ZkRegistry`` on a real ZooKeeper (integration).

"Another instance" is what the gateway and router are to a connector: for memory it is
the same object (one process shares one registry), for ZooKeeper a second client with
its own session. Each ZooKeeper test runs under its own random root, removed
afterwards. Session-dependent behaviour (a dead process's entries vanishing, re-creation
after a session loss, a lease moving) only exists for ZooKeeper.

Outages (a server killed, frozen, restarted, or wiped) are in test_registry_outages.py.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from kazoo.client import KazooClient

from im.adapters.zk_registry import ZkRegistry, encode_info, from_url
from im.ports import BackendUnavailable, ConnectorInfo
from tests.im.adapters.registry_env import (
    SESSION,
    RegistryEnv,
    eventually,
    expire_session,
    info,
    memory_env,
    node_owner,
    raw_client,
    session_of,
    until,
    zk_env_under,
)


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("zk", id="zk", marks=pytest.mark.integration),
    ]
)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[RegistryEnv]:
    gen = (
        memory_env()
        if request.param == "memory"
        else zk_env_under(request.getfixturevalue("zk_url"))
    )
    item = await anext(gen)
    try:
        yield item
    finally:
        await gen.aclose()


@pytest.fixture
async def zk_env(zk_url: str) -> AsyncIterator[RegistryEnv]:
    gen = zk_env_under(zk_url)
    item = await anext(gen)
    try:
        yield item
    finally:
        await gen.aclose()


# ---------------------------------------------------------------- contract


async def test_register_update_deregister_seen_by_another_instance(env: RegistryEnv) -> None:
    connector, reader = env.new(), env.new()
    a = info("conn-a")
    await connector.register(a)
    # A process sees its own write at once.
    assert a in await connector.connectors()
    await eventually(reader, lambda s: s.get("conn-a") == a)

    await connector.update(replace(a, connections=42))
    await eventually(reader, lambda s: s["conn-a"].connections == 42)

    b = info("conn-b", connections=3)
    await reader.register(b)
    await eventually(connector, lambda s: set(s) == {"conn-a", "conn-b"} and s["conn-b"] == b)

    await connector.deregister("conn-a")
    assert "conn-a" not in {c.connector_id for c in await connector.connectors()}
    await eventually(reader, lambda s: set(s) == {"conn-b"})
    await connector.deregister("conn-a")  # twice: no error


async def test_routers_announced_flipped_withdrawn_seen_by_another_instance(
    env: RegistryEnv,
) -> None:
    router, reader = env.new(), env.new()
    await router.announce_router("router-1", True)
    # A process sees its own write at once.
    assert await router.routers() == {"router-1": True}
    await until(reader.routers, lambda r: r == {"router-1": True}, within=2.0)

    await router.announce_router("router-1", False)
    assert await router.routers() == {"router-1": False}
    await until(reader.routers, lambda r: r == {"router-1": False}, within=2.0)

    await reader.announce_router("router-2", True)
    await until(router.routers, lambda r: r == {"router-1": False, "router-2": True}, 2.0)
    assert await reader.connectors() == []  # routers are not connectors

    await router.withdraw_router("router-1")
    assert "router-1" not in await router.routers()
    await until(reader.routers, lambda r: r == {"router-2": True}, within=2.0)
    await router.withdraw_router("router-1")  # twice: no error


async def test_node_ids_are_unique_among_holders_and_freed_by_close(env: RegistryEnv) -> None:
    first, second = env.new(), env.new()
    a = await first.lease_node_id("conn-a", 8)
    b = await second.lease_node_id("router-b", 8)
    # One process may hold several (standalone: connector and group service).
    a2 = await first.lease_node_id("group-a", 8)
    assert sorted([a.node_id, b.node_id, a2.node_id]) == [0, 1, 2]
    assert (a.owner, b.owner) == ("conn-a", "router-b")

    await first.close()  # releases what it held
    third = env.new()
    c = await third.lease_node_id("conn-c", 8)
    assert c.node_id == min(a.node_id, a2.node_id)


async def test_node_ids_exhausted_raise(env: RegistryEnv) -> None:
    first, second = env.new(), env.new()
    await first.lease_node_id("a", 2)
    await second.lease_node_id("b", 2)
    with pytest.raises(RuntimeError):
        await first.lease_node_id("c", 2)
    with pytest.raises(RuntimeError):
        await second.lease_node_id("c", 2)
    # A wider range still has room, above the ids taken.
    assert (await second.lease_node_id("d", 3)).node_id == 2


async def test_healthy_once_in_use(env: RegistryEnv) -> None:
    registry = env.new()
    await registry.connectors()
    assert registry.healthy()


# Only where a client can die without its process: the in-process registry lives and
# dies with the one process that holds it.
@pytest.mark.integration
@pytest.mark.parametrize("env", ["zk"], indirect=True)
async def test_closed_client_disappears_within_the_session_timeout(env: RegistryEnv) -> None:
    connector, reader = env.new(), env.new()
    await connector.register(info("conn-a"))
    await connector.announce_router("router-a", True)
    await eventually(reader, lambda s: "conn-a" in s)
    await until(reader.routers, lambda r: "router-a" in r)

    await connector.close()  # no deregister: the session ends with the client

    took = await eventually(reader, lambda s: "conn-a" not in s, within=SESSION + 2.0)
    assert took < SESSION + 2.0
    await until(reader.routers, lambda r: "router-a" not in r, within=SESSION + 2.0)


# ------------------------------------------------------ ZooKeeper specifics

_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from im.adapters.zk_registry import ZkRegistry
    from im.ports import ConnectorInfo

    async def main():
        registry = ZkRegistry(sys.argv[1], sys.argv[2], float(sys.argv[3]))
        await registry.register(ConnectorInfo("conn-killed", "h", 1, 2, 3))
        await registry.announce_router("router-killed", True)
        lease = await registry.lease_node_id("killed", 8)
        print("ready", lease.node_id, flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


@pytest.mark.integration
async def test_killed_process_disappears_within_the_session_timeout(
    zk_env: RegistryEnv,
) -> None:
    """Its connector and router entries go, and its node id is free again."""
    reader = zk_env.new()
    await reader.connectors()  # start watching first
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        zk_env.hosts,
        zk_env.root,
        str(SESSION),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 20)
        word, node_id = line.split()
        assert word == b"ready"
        await eventually(reader, lambda s: "conn-killed" in s)
        await until(reader.routers, lambda r: r == {"router-killed": True})

        child.send_signal(signal.SIGKILL)  # no goodbye: only the session timeout tells
        took = await eventually(reader, lambda s: "conn-killed" not in s, within=SESSION + 3.0)
        print(f"killed connector gone after {took:.2f}s (session {SESSION}s)")
        await until(reader.routers, lambda r: not r, within=1.0)
        # Its node id went with the session: the lowest free one again.
        assert (await reader.lease_node_id("next", 8)).node_id == int(node_id)
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


@pytest.mark.integration
async def test_reregisters_after_a_session_loss(zk_env: RegistryEnv) -> None:
    connector, reader = zk_env.new(), zk_env.new()
    await connector.register(info("conn-a", connections=5))
    await eventually(reader, lambda s: "conn-a" in s)

    session = await expire_session(connector, zk_env.hosts)

    await eventually(reader, lambda s: "conn-a" not in s, within=SESSION + 2.0)
    await eventually(reader, lambda s: s.get("conn-a") == info("conn-a", 5), within=10.0)
    assert session_of(connector) != session

    # The new node is the connector's own: updates and deregistration still work.
    await connector.update(info("conn-a", connections=6))
    await eventually(reader, lambda s: s["conn-a"].connections == 6)
    await connector.deregister("conn-a")
    await eventually(reader, lambda s: not s)


@pytest.mark.integration
async def test_router_and_node_id_come_back_after_a_session_loss(zk_env: RegistryEnv) -> None:
    router, reader = zk_env.new(), zk_env.new()
    lease = await router.lease_node_id("router-a", 8)
    moves: list[int] = []
    lease.on_change(moves.append)
    await router.announce_router("router-a", True)
    await router.announce_router("router-a", False)  # the latest value is what comes back
    await until(reader.routers, lambda r: r == {"router-a": False})

    session = await expire_session(router, zk_env.hosts)

    # Re-created in the new session (the gap itself may be too short to observe).
    async with raw_client(zk_env) as client:
        id_path = f"{zk_env.root}/node-ids/{lease.node_id}"
        router_path = f"{zk_env.root}/routers/router-a"

        async def owners() -> tuple[int | None, Any, Any]:
            return (
                session_of(router),
                await node_owner(client, id_path),
                await node_owner(client, router_path),
            )

        def recreated(seen: tuple[int | None, Any, Any]) -> bool:
            new_session, lease_node, router_node = seen
            return (
                new_session not in (None, session)
                and lease_node == (b"router-a", new_session)
                and router_node is not None
                and router_node[1] == new_session
            )

        await until(owners, recreated, within=10.0)
    await until(reader.routers, lambda r: r == {"router-a": False})
    assert moves == []
    assert lease.node_id == 0

    # Still the router's own entry: flipping and withdrawing work.
    await router.announce_router("router-a", True)
    await until(reader.routers, lambda r: r == {"router-a": True})
    await router.withdraw_router("router-a")
    await until(reader.routers, lambda r: not r)


@pytest.mark.integration
async def test_a_lease_whose_id_was_taken_during_a_session_loss_moves(
    zk_env: RegistryEnv,
) -> None:
    registry = zk_env.new()
    taken = await registry.lease_node_id("conn-a", 8)
    kept = await registry.lease_node_id("group-a", 8)
    assert (taken.node_id, kept.node_id) == (0, 1)
    moves: list[int] = []
    taken.on_change(moves.append)  # called from a kazoo thread: list.append is safe

    async with raw_client(zk_env) as rival:
        # Another process takes id 0. Done before the session loss rather than in its
        # gap, which the registry's reconnect could win: what matters is that the id
        # is held by another session when the registry comes back.
        path = f"{zk_env.root}/node-ids/0"
        await asyncio.to_thread(rival.delete, path)
        await asyncio.to_thread(rival.create, path, b"rival", ephemeral=True)
        rival_session = rival.client_id[0]

        await expire_session(registry, zk_env.hosts)

        async def moved() -> list[int]:
            return list(moves)

        await until(moved, bool, within=10.0)
        assert moves == [2]
        assert taken.node_id == 2  # the lowest free: 0 is the rival's, 1 is ours
        assert kept.node_id == 1
        new_session = session_of(registry)
        assert await node_owner(rival, path) == (b"rival", rival_session)
        assert await node_owner(rival, f"{zk_env.root}/node-ids/2") == (b"conn-a", new_session)
        await until(
            lambda: node_owner(rival, f"{zk_env.root}/node-ids/1"),
            lambda owner: owner == (b"group-a", new_session),
        )


@pytest.mark.integration
async def test_register_replaces_a_stale_node_of_the_same_id(zk_env: RegistryEnv) -> None:
    reader = zk_env.new()
    # A predecessor's node whose session is still open (it crashed moments ago).
    ghost = KazooClient(hosts=zk_env.hosts)
    await asyncio.to_thread(ghost.start, 10)
    try:
        await asyncio.to_thread(
            ghost.create,
            f"{zk_env.root}/connectors/conn-a",
            encode_info(info("conn-a", connections=77)),
            ephemeral=True,
            makepath=True,
        )
        await eventually(reader, lambda s: s.get("conn-a") == info("conn-a", 77))

        connector = zk_env.new()
        await connector.register(info("conn-a", connections=1))
        await eventually(reader, lambda s: s.get("conn-a") == info("conn-a", 1))
    finally:
        await asyncio.to_thread(ghost.stop)
        ghost.close()
    # The ghost's session ending does not take the new node with it.
    await asyncio.sleep(0.3)
    assert (await reader.connectors()) == [info("conn-a", 1)]


@pytest.mark.integration
async def test_undecodable_entries_are_ignored(zk_env: RegistryEnv) -> None:
    reader = zk_env.new()
    await reader.register(info("conn-good"))
    await reader.announce_router("router-good", True)
    async with raw_client(zk_env) as writer:
        for path, data in [
            ("connectors/junk", b"not json"),
            ("connectors/list", b"[1, 2]"),
            ("routers/junk", b"not json"),
            ("routers/no-flag", b'{"router_id": "no-flag"}'),
            ("routers/string-flag", b'{"router_id": "string-flag", "serving": "yes"}'),
        ]:
            await asyncio.to_thread(writer.create, f"{zk_env.root}/{path}", data, ephemeral=True)
        await asyncio.sleep(0.3)
        assert [c.connector_id for c in await reader.connectors()] == ["conn-good"]
        assert await reader.routers() == {"router-good": True}


def test_zk_from_url() -> None:
    registry = from_url("zk://h1:2181,h2:2181/im/prod?session_timeout=6")
    assert registry.hosts == "h1:2181,h2:2181"
    assert registry.root == "/im/prod"
    assert registry.session_timeout == 6.0
    assert from_url("zk://h1:2181").root == "/im"
    assert from_url("zk://h1:2181/im?op_timeout=1.5").op_timeout == 1.5
    with pytest.raises(ValueError):
        from_url("memory://")
    with pytest.raises(ValueError):
        from_url("zk://h1:2181/im?nonsense=1")


async def test_an_unreachable_zookeeper_is_backend_unavailable() -> None:

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    registry = ZkRegistry(f"127.0.0.1:{port}", connect_timeout=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(BackendUnavailable):
            await registry.register(ConnectorInfo("c-x", "127.0.0.1", 1, 2, 3))
        with pytest.raises(BackendUnavailable):
            await registry.lease_node_id("c-x", 1024)
        assert time.monotonic() - started < 10
    finally:
        await registry.close()
