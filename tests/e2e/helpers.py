"""Client-side helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import uuid

from im import events
from im.client import ImClient
from im.v1 import wire_pb2

PASSWORD = "correct-horse-9"
# The admin token of the e2e suites (conftest.py): operators' credentials, not a user's.
ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef0123456789"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def new_user(
    gateway: str, prefix: str, device: str = "dev1", transport: str = "tcp"
) -> ImClient:
    """A registered, logged-in (not yet connected) client; ``.username`` is set."""
    client = ImClient(gateway, transport=transport)
    username = unique(prefix)
    await client.register(username, PASSWORD)
    await client.login(username, PASSWORD, device)
    client.username = username  # type: ignore[attr-defined]
    return client


async def same_user(gateway: str, other: ImClient, device: str) -> ImClient:
    """Another device of ``other``'s user."""
    client = ImClient(gateway)
    await client.login(other.username, PASSWORD, device)  # type: ignore[attr-defined]
    client.username = other.username  # type: ignore[attr-defined]
    return client


async def next_event(client: ImClient, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    async def first():  # type: ignore[no-untyped-def]
        async for event in client.events():
            return event
        raise AssertionError(f"stream ended: {client.close_reason}")

    return await asyncio.wait_for(first(), timeout)


async def take_messages(
    client: ImClient, count: int, timeout: float = 30.0
) -> list[wire_pb2.Message]:
    """The next ``count`` messages (receipts in between are skipped)."""
    got: list[wire_pb2.Message] = []

    async def collect() -> None:
        async for message in client.messages():
            got.append(message)
            if len(got) == count:
                return

    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        raise AssertionError(f"got {len(got)} of {count} messages") from None
    return got


async def next_receipt(client: ImClient, timeout: float = 15.0) -> wire_pb2.Receipt:
    while True:
        event = await next_event(client, timeout)
        if isinstance(event, wire_pb2.Receipt):
            return event


async def take_chat(client: ImClient, count: int) -> list[wire_pb2.Message]:
    """The next ``count`` messages and recall/edit events; the group's system events
    (members added, roles changed...) are skipped."""
    got: list[wire_pb2.Message] = []
    while len(got) < count:
        got += [
            m for m in await take_messages(client, 1) if not events.is_group_event(m.content_type)
        ]
    return got
