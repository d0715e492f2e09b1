"""The registry tests' shared pieces: an environment that makes registries ("another
process"), on memory or on a ZooKeeper root of its own, and waiting helpers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from kazoo.client import KazooClient

from im.adapters.memory import MemoryRegistry
from im.adapters.zk_registry import ZkRegistry, from_url
from im.ports import ConnectorInfo

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


async def memory_env() -> AsyncIterator[RegistryEnv]:
    shared = MemoryRegistry()
    yield RegistryEnv("memory", lambda: shared)


async def zk_env_under(url: str) -> AsyncIterator[RegistryEnv]:
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
