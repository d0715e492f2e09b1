"""Standalone: a graceful stop in the middle of a stream of sends loses no acked one.

The in-process bus does not outlive the process, so on SIGTERM the suite stops its
connectors first (no more SendAcks) and the router stores everything already handed
over before it exits. After a restart on the same data folder, every acked message is
in history once, gap-free."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from im.client import ImClient
from im.v1 import wire_pb2
from tests.e2e.harness import start_suite, stop_suite
from tests.e2e.helpers import PASSWORD, new_user

pytestmark = pytest.mark.e2e

SENDERS = 6
CHUNK = 200  # sends in flight per sender


async def keep_sending(
    client: ImClient, conv: str, acked: list[wire_pb2.SendAck], flowing: asyncio.Event
) -> None:
    """Pipelined sends, CHUNK at a time, until the suite goes away under them; keeps
    what was acked."""
    closed = False

    async def one(i: int) -> None:
        nonlocal closed
        try:
            acked.append(await client.send(conv, f"m{i}", attempts=1))
        except Exception:
            closed = True
            return
        if len(acked) >= 500:
            flowing.set()

    sent = 0
    while not closed:
        await asyncio.gather(*(one(sent + i) for i in range(CHUNK)))
        sent += CHUNK


async def test_acked_messages_survive_a_stop_in_the_middle_of_sending(tmp_path):
    data = tmp_path / "suite"
    suite = start_suite(data, send_rate_per_second="10000", send_burst="10000")
    acked: list[wire_pb2.SendAck] = []
    try:
        bob = await new_user(suite.gateway, "bob")
        senders = [await new_user(suite.gateway, f"s{i}") for i in range(SENDERS)]
        convs = []
        for sender in senders:
            await sender.connect()
            convs.append(await sender.direct_conversation_with(bob.username))
        flowing = asyncio.Event()
        streams = [
            asyncio.get_running_loop().create_task(keep_sending(s, c, acked, flowing))
            for s, c in zip(senders, convs, strict=True)
        ]
        await asyncio.wait_for(flowing.wait(), 30)  # the stream flows: stop the suite
        stopping = asyncio.get_running_loop().run_in_executor(None, stop_suite, suite)
        await asyncio.gather(*streams)
        code = await stopping
        for sender in senders:
            await sender.close()
    finally:
        with contextlib.suppress(Exception):
            suite.process.kill()
    assert code == 0, suite.log()
    assert len(acked) >= 500

    again = start_suite(data)
    try:
        reader = ImClient(again.gateway)
        await reader.login(bob.username, PASSWORD, "check")  # type: ignore[attr-defined]
        stored: dict[int, int] = {}
        for conv in convs:
            history = [m async for m in reader.gateway.history_all(conv)]
            seqs = [m.seq for m in history]
            assert seqs == list(range(1, len(seqs) + 1)), f"gap in {conv}"
            stored.update({m.msg_id: m.seq for m in history})
        missing = [a.msg_id for a in acked if a.msg_id not in stored]
        assert not missing, f"{len(missing)} of {len(acked)} acked messages were lost"
        await reader.close()
    finally:
        assert stop_suite(again) == 0
