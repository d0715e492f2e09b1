"""One contract for the connector registry: the in-process ``MemoryRegistry`` and
``ZkRegistry`` on a real ZooKeeper (integration).

"Another instance" is what the gateway and router are to a connector: for memory it is
the same object (one process shares one registry), for ZooKeeper a second client with
its own session. Each ZooKeeper test runs under its own random root, removed
afterwards. Session-dependent behaviour (a dead connector vanishing, re-registration
after a session loss) only exists for ZooKeeper.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from kazoo.client import KazooClient

from im.adapters.memory import MemoryRegistry
from im.adapters.zk_registry import ZkRegistry, encode_info, from_url
from im.ports import ConnectorInfo

# Short sessions keep the death tests quick (ZooKeeper tickTime 500 ms allows 1-10 s;
# under 2 s sessions churn).
SESSION = 2.0


@dataclass
class RegistryEnv:
    kind: str
    make: Callable[[], Any]  # a new registry instance ("another process")
    hosts: str = ""
    root: str = ""
    made: list[Any] = field(default_factory=list)

    def new(self) -> Any:
        registry = self.make()
        self.made.append(registry)
        return registry


async def _memory() -> AsyncIterator[RegistryEnv]:
    shared = MemoryRegistry()
    yield RegistryEnv("memory", lambda: shared)


async def _zk(url: str) -> AsyncIterator[RegistryEnv]:
    probe = from_url(url)  # the fixture's URL names hosts and a base root
    root = f"{probe.root}/{uuid.uuid4().hex[:10]}"
    env = RegistryEnv(
        "zk", lambda: ZkRegistry(probe.hosts, root, SESSION), hosts=probe.hosts, root=root
    )
    try:
        yield env
    finally:
        for registry in env.made:
            await registry.close()
        await asyncio.to_thread(_delete_tree, probe.hosts, root)


def _delete_tree(hosts: str, root: str) -> None:
    client = KazooClient(hosts=hosts)
    client.start(timeout=10)
    try:
        client.delete(root, recursive=True)
    except Exception:
        pass
    finally:
        client.stop()
        client.close()


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("zk", id="zk", marks=pytest.mark.integration),
    ]
)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[RegistryEnv]:
    gen = _memory() if request.param == "memory" else _zk(request.getfixturevalue("zk_url"))
    item = await anext(gen)
    try:
        yield item
    finally:
        await gen.aclose()


@pytest.fixture
async def zk_env(zk_url: str) -> AsyncIterator[RegistryEnv]:
    gen = _zk(zk_url)
    item = await anext(gen)
    try:
        yield item
    finally:
        await gen.aclose()


def info(connector_id: str, connections: int = 0) -> ConnectorInfo:
    return ConnectorInfo(
        connector_id=connector_id,
        host="10.0.0.7",
        tcp_port=7070,
        ws_port=7071,
        grpc_port=50053,
        connections=connections,
        version="1",
    )


async def eventually(
    registry: Any, check: Callable[[dict[str, ConnectorInfo]], bool], within: float = 5.0
) -> float:
    """Seconds until ``check(connectors by id)`` holds; fails after ``within``."""
    started = time.monotonic()
    while True:
        seen = {c.connector_id: c for c in await registry.connectors()}
        if check(seen):
            return time.monotonic() - started
        if time.monotonic() - started > within:
            pytest.fail(f"registry never reached the expected state; last seen {seen}")
        await asyncio.sleep(0.02)


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


# Only where a client can die without its process: the in-process registry lives and
# dies with the one process that holds it.
@pytest.mark.integration
@pytest.mark.parametrize("env", ["zk"], indirect=True)
async def test_closed_client_disappears_within_the_session_timeout(env: RegistryEnv) -> None:
    connector, reader = env.new(), env.new()
    await connector.register(info("conn-a"))
    await eventually(reader, lambda s: "conn-a" in s)

    await connector.close()  # no deregister: the session ends with the client

    took = await eventually(reader, lambda s: "conn-a" not in s, within=SESSION + 2.0)
    assert took < SESSION + 2.0


# ------------------------------------------------------ ZooKeeper specifics

_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from im.adapters.zk_registry import ZkRegistry
    from im.ports import ConnectorInfo

    async def main():
        registry = ZkRegistry(sys.argv[1], sys.argv[2], float(sys.argv[3]))
        await registry.register(ConnectorInfo("conn-killed", "h", 1, 2, 3))
        print("ready", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


@pytest.mark.integration
async def test_killed_connector_disappears_within_the_session_timeout(
    zk_env: RegistryEnv,
) -> None:
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
        assert line.strip() == b"ready"
        await eventually(reader, lambda s: "conn-killed" in s)

        child.send_signal(signal.SIGKILL)  # no goodbye: only the session timeout tells
        took = await eventually(reader, lambda s: "conn-killed" not in s, within=SESSION + 3.0)
        print(f"killed connector gone after {took:.2f}s (session {SESSION}s)")
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


@pytest.mark.integration
async def test_reregisters_after_a_session_loss(zk_env: RegistryEnv) -> None:
    connector, reader = zk_env.new(), zk_env.new()
    await connector.register(info("conn-a", connections=5))
    await eventually(reader, lambda s: "conn-a" in s)

    # Expire the connector's session: a second client takes it over and closes it,
    # which makes the server drop its ephemeral nodes (as after a long partition).
    session = connector._client.client_id
    thief = KazooClient(hosts=zk_env.hosts, client_id=session)
    await asyncio.to_thread(thief.start, 10)
    await asyncio.to_thread(thief.stop)
    thief.close()

    await eventually(reader, lambda s: "conn-a" not in s, within=SESSION + 2.0)
    await eventually(reader, lambda s: s.get("conn-a") == info("conn-a", 5), within=10.0)
    assert connector._client.client_id != session

    # The new node is the connector's own: updates and deregistration still work.
    await connector.update(info("conn-a", connections=6))
    await eventually(reader, lambda s: s["conn-a"].connections == 6)
    await connector.deregister("conn-a")
    await eventually(reader, lambda s: not s)


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
    writer = KazooClient(hosts=zk_env.hosts)
    await asyncio.to_thread(writer.start, 10)
    try:
        await asyncio.to_thread(
            writer.create, f"{zk_env.root}/connectors/junk", b"not json", ephemeral=True
        )
        await asyncio.sleep(0.3)
        assert [c.connector_id for c in await reader.connectors()] == ["conn-good"]
    finally:
        await asyncio.to_thread(writer.stop)
        writer.close()


def test_zk_from_url() -> None:
    registry = from_url("zk://h1:2181,h2:2181/im/prod?session_timeout=6")
    assert registry.hosts == "h1:2181,h2:2181"
    assert registry.root == "/im/prod"
    assert registry.session_timeout == 6.0
    assert from_url("zk://h1:2181").root == "/im"
    with pytest.raises(ValueError):
        from_url("memory://")
    with pytest.raises(ValueError):
        from_url("zk://h1:2181/im?nonsense=1")
