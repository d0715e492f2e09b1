"""Hostile clients and poison records do not stall anyone else, in both modes.

While one user floods its connector (a stranger's out-of-range reads and acks, 5,000
reads of made-up conversations) and another socket floods pings before it ever
authenticates, two other users exchange 20 messages: each arrives within 2 s, the
conversation stays gap-free, nobody sees a receipt from the stranger, and a member's
read beyond the last message is clamped to it. In distributed mode, poison records
are also put straight onto the bus; the routers set them aside as dead letters that
`imctl dead-letters` lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from dataclasses import dataclass, field

import httpx
import pytest

from im.client import ImClient
from im.config import Settings
from im.protocol import FrameDecoder, encode_frame
from im.v1 import bus_pb2, wire_pb2
from tests.e2e.conftest import Target
from tests.e2e.harness import IMCTL
from tests.e2e.helpers import new_user

pytestmark = pytest.mark.e2e

MESSAGES = 20
DEADLINE = 2.0  # seconds from send to the receiver, under attack
MAX_SEQ = (1 << 63) - 1


# --------------------------------------------------------------------- attackers


@dataclass
class RawSocket:
    """A client that writes whatever frames it likes and records every answer."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    frames: list[wire_pb2.Frame] = field(default_factory=list)
    closed_by_server: bool = False
    authenticated: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def open(cls, address: str) -> RawSocket:
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    async def pump(self) -> None:
        decoder = FrameDecoder(1 << 20)
        with contextlib.suppress(ConnectionError):
            while data := await self.reader.read(65536):
                self.frames.extend(decoder.feed(data))
                if not self.authenticated.is_set() and "auth_ok" in self.kinds():
                    self.authenticated.set()
        self.closed_by_server = True

    async def write(self, frames: list[wire_pb2.Frame]) -> None:
        with contextlib.suppress(ConnectionError):
            self.writer.write(b"".join(encode_frame(f) for f in frames))
            await self.writer.drain()

    def kinds(self) -> list[str]:
        return [f.WhichOneof("kind") for f in self.frames]

    def error_codes(self) -> list[str]:
        return [wire_pb2.ErrorCode.Name(f.error.code) for f in self.frames if f.HasField("error")]

    def close(self) -> None:
        self.writer.close()


def read(conv: str, seq: int) -> wire_pb2.Frame:
    return wire_pb2.Frame(read=wire_pb2.Read(conversation_id=conv, seq=seq))


def ack(conv: str, seq: int) -> wire_pb2.Frame:
    return wire_pb2.Frame(deliver_ack=wire_pb2.DeliverAck(conversation_id=conv, seq=seq))


async def stranger_floods(mallory: ImClient, conv: str) -> RawSocket:
    sock = await RawSocket.open(mallory.login_result.connector.tcp)
    pump = asyncio.get_running_loop().create_task(sock.pump())
    token = mallory.login_result.access_token
    await sock.write([wire_pb2.Frame(auth=wire_pb2.Auth(token=token))])
    await asyncio.wait_for(sock.authenticated.wait(), 10)
    out_of_range = [
        read(conv, 1 << 63),
        read(conv, (1 << 64) - 1),
        ack(conv, (1 << 64) - 1),
        read("g:1", 1 << 63),
        read(conv, 10**12),
    ]
    unknown = [read(f"g:{9_000_000_000 + i}", 1) for i in range(5000)]
    await sock.write(out_of_range + unknown)
    sock.pump_task = pump  # type: ignore[attr-defined]
    return sock


async def pings_before_auth(address: str) -> RawSocket:
    sock = await RawSocket.open(address)
    pump = asyncio.get_running_loop().create_task(sock.pump())
    await sock.write([wire_pb2.Frame(ping=wire_pb2.Ping())] * 20_000)
    sock.pump_task = pump  # type: ignore[attr-defined]
    return sock


# ---------------------------------------------------------------- poison records


def cluster_settings(cluster) -> Settings:  # type: ignore[no-untyped-def]
    env = cluster.procs["router-1"].env
    return Settings(
        bus_url=env["IM_BUS_URL"],
        topic_messages=env["IM_TOPIC_MESSAGES"],
        topic_cursors=env["IM_TOPIC_CURSORS"],
        topic_membership=env["IM_TOPIC_MEMBERSHIP"],
    )


async def poison_the_bus(cluster, conv: str, stranger: int) -> None:  # type: ignore[no-untyped-def]
    """Records no connector would let through, on the conversation's own partition."""
    from im.adapters import kafka_bus

    settings = cluster_settings(cluster)
    bus = kafka_bus.from_url(settings.bus_url, settings, client_id="e2e-poison")
    try:
        await bus.publish(
            settings.topic_cursors,
            conv,
            bus_pb2.CursorReport(
                conversation_id=conv, user_id=stranger, read_seq=1 << 63
            ).SerializeToString(),
        )
        await bus.publish(settings.topic_messages, conv, b"\xff\xfe not a message")
    finally:
        await bus.close()


def dead_letters(cluster) -> list[dict]:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        [str(IMCTL), "dead-letters", "--limit", "100"],
        env=cluster.procs["router-1"].env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


# -------------------------------------------------------------------------- test


async def receive_in_time(bob: ImClient, sent_at: dict[str, float]) -> dict[int, float]:
    """seq -> seconds from send to arrival, for the next MESSAGES messages."""
    latencies: dict[int, float] = {}
    async with asyncio.timeout(60):
        async for message in bob.messages():
            latencies[message.seq] = time.monotonic() - sent_at[message.client_msg_id]
            if len(latencies) == MESSAGES:
                return latencies
    raise AssertionError(f"stream ended: {bob.close_reason}")


async def test_floods_and_poison_leave_others_on_time(target: Target):
    alice, bob, mallory, nobody = [
        await new_user(target.gateway, name) for name in ("alice", "bob", "mallory", "nobody")
    ]
    attackers: list[RawSocket] = []
    try:
        await alice.connect()
        await bob.connect()
        conv = await alice.direct_conversation_with(bob.username)
        attackers.append(await stranger_floods(mallory, conv))
        attackers.append(await pings_before_auth(nobody.login_result.connector.tcp))
        if target.cluster is not None:
            await poison_the_bus(target.cluster, conv, mallory.user_id)

        sent_at: dict[str, float] = {}
        receiving = asyncio.get_running_loop().create_task(receive_in_time(bob, sent_at))
        for i in range(MESSAGES):
            cid = f"under-attack-{i}"
            sent_at[cid] = time.monotonic()
            await alice.send(conv, f"message {i}", client_msg_id=cid)
            await asyncio.sleep(0.05)
        latencies = await receiving
        assert sorted(latencies) == list(range(1, MESSAGES + 1))  # gap-free, in full
        slowest = max(latencies.values())
        assert slowest < DEADLINE, f"slowest message took {slowest:.2f} s"

        # A member's read beyond the last message is clamped to it; the stranger's
        # reads produced no receipt for anyone.
        await bob.read(conv, 10**12)
        receipts = await collect_receipts(alice, until_reader=bob.user_id)
        assert (bob.user_id, MESSAGES) in receipts
        assert all(reader != mallory.user_id for reader, _seq in receipts)

        history = await alice.gateway.history(conv, 0, 100)
        assert [m.seq for m in history.messages] == list(range(1, MESSAGES + 1))

        stranger, early = attackers
        await asyncio.sleep(0.5)
        codes = set(stranger.error_codes())
        assert "ERROR_CODE_FORBIDDEN" in codes
        assert codes <= {"ERROR_CODE_FORBIDDEN", "ERROR_CODE_RATE_LIMITED"}
        assert not stranger.closed_by_server  # refused, not disconnected
        assert early.kinds() == ["error"]  # one answer to 20,000 pings, then closed
        assert early.error_codes() == ["ERROR_CODE_AUTH_REQUIRED"]
        assert early.closed_by_server

        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{target.gateway}/readyz")).status_code == 200
        print(
            f"\nunder attack: {MESSAGES} messages, slowest {slowest * 1000:.0f} ms, "
            f"median {sorted(latencies.values())[MESSAGES // 2] * 1000:.0f} ms; stranger got "
            f"{len(stranger.error_codes())} errors {sorted(codes)}; pre-auth socket got "
            f"{len(early.frames)} frame(s) for 20,000 pings"
        )
        if target.cluster is not None:
            reasons = [letter["reason"] for letter in dead_letters(target.cluster)]
            assert any("out of range" in r for r in reasons), reasons
            assert any(r.startswith("undecodable") for r in reasons), reasons
    finally:
        for sock in attackers:
            sock.close()
        for client in (alice, bob, mallory, nobody):
            await client.close()


async def collect_receipts(client: ImClient, until_reader: int) -> list[tuple[int, int]]:
    """(reader, read_seq) of receipts until one from ``until_reader`` arrives."""
    seen: list[tuple[int, int]] = []
    async with asyncio.timeout(15):
        async for event in client.events():
            if isinstance(event, wire_pb2.Receipt):
                seen.append((event.reader_id, event.read_seq))
                if event.reader_id == until_reader:
                    return seen
    raise AssertionError(f"stream ended: {client.close_reason}")
