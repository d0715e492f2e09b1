"""One contract for the registry (connectors, routers, node-id leases): the in-process
``MemoryRegistry`` and ``ZkRegistry`` on a real ZooKeeper (integration).

"Another instance" is what the gateway and router are to a connector: for memory it is
the same object (one process shares one registry), for ZooKeeper a second client with
its own session. Each ZooKeeper test runs under its own random root, removed
afterwards. Session-dependent behaviour (a dead process's entries vanishing, re-creation
after a session loss, a lease moving) only exists for ZooKeeper.

Outages (a server killed, frozen with SIGSTOP, restarted, or replaced by one that lost
its data) are played on a private ZooKeeper that the test starts on a free port, never
on the shared one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kazoo.client import KazooClient

from im.adapters.memory import MemoryRegistry
from im.adapters.zk_registry import ZkRegistry, encode_info, from_url
from im.free_ports import free_port
from im.ports import BackendUnavailable, ConnectorInfo

T = TypeVar("T")

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


async def until(
    read: Callable[[], Awaitable[T]], check: Callable[[T], bool], within: float = 5.0
) -> float:
    """Seconds until ``check(await read())`` holds; fails after ``within``."""
    started = time.monotonic()
    while True:
        seen = await read()
        if check(seen):
            return time.monotonic() - started
        if time.monotonic() - started > within:
            pytest.fail(f"never reached the expected state; last seen {seen}")
        await asyncio.sleep(0.02)


async def eventually(
    registry: Any, check: Callable[[dict[str, ConnectorInfo]], bool], within: float = 5.0
) -> float:
    """Seconds until ``check(connectors by id)`` holds; fails after ``within``."""

    async def by_id() -> dict[str, ConnectorInfo]:
        return {c.connector_id: c for c in await registry.connectors()}

    return await until(by_id, check, within)


@asynccontextmanager
async def raw_client(env: RegistryEnv) -> AsyncIterator[KazooClient]:
    """A plain kazoo client with its own session: another process's view."""
    client = KazooClient(hosts=env.hosts)
    await asyncio.to_thread(client.start, 10)
    try:
        yield client
    finally:
        await asyncio.to_thread(client.stop)
        client.close()


async def node_owner(client: KazooClient, path: str) -> tuple[bytes, int] | None:
    """(data, session id of the owner) of an ephemeral node, or None if it is gone."""
    found = await asyncio.to_thread(client.exists, path)
    if found is None:
        return None
    data, stat = await asyncio.to_thread(client.get, path)
    return data, stat.ephemeralOwner


async def expire_session(registry: ZkRegistry, hosts: str) -> int:
    """Expire the registry's session as a long partition would: a second client takes
    it over and closes it, which makes the server drop its ephemeral nodes at once.
    Returns the expired session's id."""
    session = registry._client.client_id
    thief = KazooClient(hosts=hosts, client_id=session)
    await asyncio.to_thread(thief.start, 10)
    await asyncio.to_thread(thief.stop)
    thief.close()
    return session[0]


def session_of(registry: ZkRegistry) -> int | None:
    client_id = registry._client.client_id
    return client_id[0] if client_id else None


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
    import socket

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


# ------------------------------------- a private ZooKeeper: killed, frozen, wiped

_ZK_CLASSPATH = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"


def _four_letter(port: int, command: bytes) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(command)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(4096):
                out += chunk
            return out
    except OSError:
        return b""


def _thread_states(tasks: Path) -> set[str]:
    """The scheduler states of a process's threads (``T``: stopped by a signal)."""
    states = set()
    for stat in tasks.glob("*/stat"):
        try:
            states.add(stat.read_text().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError):
            pass  # the thread ended meanwhile
    return states


class PrivateZooKeeper:
    """A standalone ZooKeeper of one test, on a free port, that the test may kill,
    freeze (SIGSTOP), wipe (lose its data) and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.hosts = f"127.0.0.1:{self.port}"
        self.data_dir = workdir / "data"
        self.config = workdir / "zoo.cfg"
        self.log = workdir / "zookeeper.log"
        self.config.write_text(
            "tickTime=500\n"
            f"dataDir={self.data_dir}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=srvr\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Returns once the server serves requests (an open port is not enough)."""
        self.process = await asyncio.to_thread(self._spawn)
        deadline = time.monotonic() + 30
        while not _four_letter(self.port, b"srvr").startswith(b"Zookeeper version"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"private ZooKeeper did not start; see {self.log}")
            await asyncio.sleep(0.05)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [
                    "java",
                    "-cp",
                    _ZK_CLASSPATH,
                    "org.apache.zookeeper.server.ZooKeeperServerMain",
                    str(self.config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no goodbye to any client; the data stays on disk."""
        assert self.process is not None
        self.process.kill()  # also ends a frozen process
        self.process.wait()
        self.process = None

    def wipe(self) -> None:
        """Lose every znode and session: what a server replaced by an empty one knows."""
        assert self.process is None
        shutil.rmtree(self.data_dir, ignore_errors=True)

    async def freeze(self) -> None:
        """SIGSTOP; returns once every thread of the server has stopped (until then it
        may still answer a request or two)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.process.pid}/task")
        await until(lambda: asyncio.to_thread(_thread_states, tasks), lambda s: s == {"T"})

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def _zookeeper_installed() -> bool:
    jars = _ZK_CLASSPATH.split(":")
    return shutil.which("java") is not None and all(os.path.exists(jar) for jar in jars)


@pytest.fixture
async def private_zk(tmp_path: Path) -> AsyncIterator[PrivateZooKeeper]:
    if not _zookeeper_installed():
        message = "java or the Debian zookeeper package missing: apt-get install -y zookeeper"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI must not skip integration tests)")
        pytest.skip(message)
    server = PrivateZooKeeper(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.kill()


@pytest.fixture
async def private_env(private_zk: PrivateZooKeeper) -> AsyncIterator[RegistryEnv]:
    """Registries on the private server; closed before it is killed."""
    env = RegistryEnv(
        "zk",
        lambda: ZkRegistry(private_zk.hosts, "/im-test", SESSION),
        hosts=private_zk.hosts,
        root="/im-test",
    )
    try:
        yield env
    finally:
        for registry in env.made:
            await registry.close()


async def healthy_now(registry: ZkRegistry) -> bool:
    return registry.healthy()


async def both_healthy(*registries: ZkRegistry) -> bool:
    return all(r.healthy() for r in registries)


@pytest.mark.integration
async def test_heals_after_zookeeper_loses_its_data(
    private_zk: PrivateZooKeeper, private_env: RegistryEnv
) -> None:
    """The server is replaced by an empty one: every session, entry, parent directory
    and watch is gone. Writers re-create what they own, readers rebuild their copies."""
    writer, reader, ghost = private_env.new(), private_env.new(), private_env.new()
    await writer.register(info("conn-a", connections=5))
    await writer.announce_router("router-a", True)
    lease = await writer.lease_node_id("conn-a", 8)
    # Entries of a process that ends during the outage: only a reader that re-reads
    # the new server can tell they are gone.
    await ghost.register(info("conn-ghost"))
    await ghost.announce_router("router-ghost", True)
    await eventually(reader, lambda s: set(s) == {"conn-a", "conn-ghost"})
    await until(reader.routers, lambda r: r == {"router-a": True, "router-ghost": True})
    sessions = (session_of(writer), session_of(reader))

    private_zk.kill()
    started = time.monotonic()
    await ghost.close()
    assert time.monotonic() - started < 3.0  # bounded with the server gone
    private_zk.wipe()
    await private_zk.start()
    up = time.monotonic()

    took_entries = await eventually(
        reader, lambda s: s == {"conn-a": info("conn-a", connections=5)}, within=SESSION + 8
    )
    took_routers = await until(reader.routers, lambda r: r == {"router-a": True}, within=5.0)
    took_healthy = await until(lambda: both_healthy(writer, reader), bool, within=5.0)
    assert session_of(writer) not in (None, *sessions)
    assert session_of(reader) not in (None, *sessions)
    async with raw_client(private_env) as client:
        id_path = f"{private_env.root}/node-ids/{lease.node_id}"
        assert await node_owner(client, id_path) == (b"conn-a", session_of(writer))
        conn_path = f"{private_env.root}/connectors/conn-a"
        assert (await node_owner(client, conn_path) or (b"", 0))[1] == session_of(writer)
    took_all = time.monotonic() - up
    print(
        f"after the wiped server was up: reader saw connectors in {took_entries:.2f}s, "
        f"routers in +{took_routers:.2f}s, both healthy in +{took_healthy:.2f}s, all in "
        f"{took_all:.2f}s (session {SESSION}s)"
    )
    assert took_all < SESSION + 5

    # The watches are set again: changes flow both ways, new entries are seen.
    await writer.update(info("conn-a", connections=6))
    await eventually(reader, lambda s: s["conn-a"].connections == 6)
    await writer.announce_router("router-a", False)
    await until(reader.routers, lambda r: r == {"router-a": False})
    await reader.register(info("conn-b"))
    await eventually(writer, lambda s: set(s) == {"conn-a", "conn-b"})
    await writer.deregister("conn-a")
    await eventually(reader, lambda s: set(s) == {"conn-b"})
    assert lease.node_id == 0


@pytest.mark.integration
async def test_heals_after_a_server_restart_with_data_kept(
    private_zk: PrivateZooKeeper, private_env: RegistryEnv
) -> None:
    writer, reader, ghost = private_env.new(), private_env.new(), private_env.new()
    await writer.register(info("conn-a", connections=5))
    await writer.announce_router("router-a", True)
    lease = await writer.lease_node_id("conn-a", 8)
    moves: list[int] = []
    lease.on_change(moves.append)
    await ghost.register(info("conn-ghost"))
    await eventually(reader, lambda s: set(s) == {"conn-a", "conn-ghost"})
    await until(reader.routers, lambda r: r == {"router-a": True})

    private_zk.kill()  # kill -9: the data stays, sessions included
    await ghost.close()  # its session outlives it on the server until it times out
    await private_zk.start()
    up = time.monotonic()

    took_healthy = await until(lambda: both_healthy(writer, reader), bool, within=SESSION + 5)
    # The ghost's entry goes when the server expires its session: only a reader with
    # live watches sees that.
    took_ghost = await eventually(reader, lambda s: set(s) == {"conn-a"}, within=SESSION + 5)
    assert (await reader.routers()) == {"router-a": True}
    async with raw_client(private_env) as client:
        await until(
            lambda: node_owner(client, f"{private_env.root}/node-ids/{lease.node_id}"),
            lambda owner: owner == (b"conn-a", session_of(writer)),
        )
        await until(
            lambda: node_owner(client, f"{private_env.root}/connectors/conn-a"),
            lambda owner: owner is not None and owner[1] == session_of(writer),
        )
    print(
        f"after the restarted server was up: both healthy in {took_healthy:.2f}s, the "
        f"ghost's entry gone in +{took_ghost:.2f}s, all in {time.monotonic() - up:.2f}s "
        f"(session {SESSION}s)"
    )
    assert moves == []

    await writer.update(info("conn-a", connections=7))
    await eventually(reader, lambda s: s["conn-a"].connections == 7)
    await writer.withdraw_router("router-a")
    await until(reader.routers, lambda r: not r)


@pytest.mark.integration
async def test_healthy_follows_the_session(
    private_zk: PrivateZooKeeper, private_env: RegistryEnv
) -> None:
    registry = private_env.new()
    assert not registry.healthy()  # before start
    await registry.start()
    assert registry.healthy()

    await private_zk.freeze()
    took = await until(lambda: healthy_now(registry), lambda h: not h, within=SESSION + 3)
    print(f"frozen server: unhealthy after {took:.2f}s")
    private_zk.thaw()
    took = await until(lambda: healthy_now(registry), bool, within=SESSION + 5)
    print(f"thawed server: healthy again after {took:.2f}s")

    private_zk.kill()
    took = await until(lambda: healthy_now(registry), lambda h: not h, within=SESSION + 3)
    print(f"killed server: unhealthy after {took:.2f}s")
    await private_zk.start()
    took = await until(lambda: healthy_now(registry), bool, within=SESSION + 5)
    print(f"restarted server: healthy again after {took:.2f}s")

    await registry.close()
    assert not registry.healthy()


async def timed(call: Awaitable[Any]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await call
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


@pytest.mark.integration
@pytest.mark.parametrize("outage", ["frozen", "killed"])
async def test_calls_are_bounded_while_zookeeper_is_unreachable(
    private_zk: PrivateZooKeeper, private_env: RegistryEnv, outage: str
) -> None:
    writer, reader, closing = private_env.new(), private_env.new(), private_env.new()
    await writer.register(info("conn-a"))
    await writer.register(info("conn-c"))
    await writer.announce_router("router-a", True)
    await writer.lease_node_id("conn-a", 8)
    await closing.start()
    await eventually(reader, lambda s: set(s) == {"conn-a", "conn-c"})
    await until(reader.routers, lambda r: r == {"router-a": True})

    if outage == "frozen":
        await private_zk.freeze()  # the clients do not even notice at first
    else:
        private_zk.kill()

    # Reads answer from the cache at once.
    started = time.monotonic()
    assert {c.connector_id for c in await reader.connectors()} == {"conn-a", "conn-c"}
    assert await reader.routers() == {"router-a": True}
    assert time.monotonic() - started < 0.5

    # Writes give up within a few seconds (op_timeout 3 s), all at once.
    results = await asyncio.gather(
        timed(writer.register(info("conn-b"))),
        timed(writer.update(info("conn-a", connections=9))),
        timed(writer.deregister("conn-c")),
        timed(writer.announce_router("router-b", True)),
        timed(writer.withdraw_router("router-a")),
        timed(writer.lease_node_id("more", 8)),
    )
    print(f"{outage} server: writes failed after " + ", ".join(f"{t:.2f}s" for t, _ in results))
    for took, error in results:
        assert isinstance(error, BackendUnavailable), error
        assert took < 4.5

    started = time.monotonic()
    await closing.close()
    took_close = time.monotonic() - started
    print(f"{outage} server: close() returned after {took_close:.2f}s")
    assert took_close < 3.0

    if outage == "frozen":
        private_zk.thaw()
    else:
        await private_zk.start()
    # What failed is still what the writer wants: ZooKeeper is brought to it.
    await eventually(
        reader,
        lambda s: s == {"conn-a": info("conn-a", connections=9), "conn-b": info("conn-b")},
        within=SESSION + 8,
    )
    await until(reader.routers, lambda r: r == {"router-b": True})
    await until(lambda: both_healthy(writer, reader), bool)
    async with raw_client(private_env) as client:
        # Only the lease taken before the outage holds an id.
        children = await asyncio.to_thread(client.get_children, f"{private_env.root}/node-ids")
        assert children == ["0"]


_CLOSING_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from im.adapters.zk_registry import ZkRegistry
    from im.ports import ConnectorInfo

    async def main():
        registry = ZkRegistry(sys.argv[1], "/im-test", float(sys.argv[2]))
        await registry.register(ConnectorInfo("conn-closing", "h", 1, 2, 3))
        await registry.lease_node_id("closing", 8)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        started = time.monotonic()
        await registry.close()
        print(f"closed {time.monotonic() - started:.3f}", flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.integration
@pytest.mark.parametrize("outage", ["frozen", "killed"])
async def test_close_and_exit_are_bounded_while_zookeeper_is_unreachable(
    private_zk: PrivateZooKeeper, outage: str
) -> None:
    """No thread of the registry keeps the process from exiting."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLOSING_CHILD,
        private_zk.hosts,
        str(SESSION),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 20) == b"ready\n"
        if outage == "frozen":
            await private_zk.freeze()
        else:
            private_zk.kill()
        started = time.monotonic()
        child.stdin.write(b"close\n")
        await child.stdin.drain()
        word, took_close = (await asyncio.wait_for(child.stdout.readline(), 10)).split()
        assert word == b"closed"
        await asyncio.wait_for(child.wait(), 10)
        took_exit = time.monotonic() - started
        print(f"{outage} server: close() {float(took_close):.2f}s, process gone {took_exit:.2f}s")
        assert float(took_close) < 3.0
        assert took_exit < 4.0
        assert child.returncode == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        if outage == "frozen" and private_zk.process is not None:
            private_zk.thaw()
