"""ZooKeeper outages under the registry: a server killed, frozen with SIGSTOP,
restarted, or replaced by one that lost its data. Played on a private ZooKeeper that the
test starts on a free port, never on the shared one."""

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
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from im.adapters.zk_registry import ZkRegistry
from im.free_ports import free_port
from im.ports import BackendUnavailable
from tests.im.adapters.registry_env import (
    SESSION,
    RegistryEnv,
    eventually,
    info,
    node_owner,
    raw_client,
    session_of,
    until,
)

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
