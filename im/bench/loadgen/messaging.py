"""Workload ``messaging``: senders and receivers over the project's client library,
open loop or closed-loop burst (see the package docstring), with the bitmaps that
ship what was acked and received back to the runner."""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from array import array
from collections import Counter
from typing import Any

from im.bench.loadgen.connect import close_all, failure_reason, open_many

BODY_HEADER = struct.Struct(">qII")  # send time (ns since epoch), sender gid, sequence number
CONTENT_TYPE = "application/x-im-bench"


# ------------------------------------------------------------------ bitmaps


class Bitmap:
    """A growable set of small non-negative integers, shipped as bytes."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, n: int) -> bool:
        """Set bit n; False if it was set already."""
        byte, bit = n >> 3, 1 << (n & 7)
        data = self.data
        if byte >= len(data):
            data.extend(bytes(byte - len(data) + 1 + len(data) // 2))
        if data[byte] & bit:
            return False
        data[byte] |= bit
        return True

    def __contains__(self, n: int) -> bool:
        byte = n >> 3
        return byte < len(self.data) and bool(self.data[byte] & (1 << (n & 7)))

    def to_bytes(self) -> bytes:
        return bytes(self.data.rstrip(b"\x00"))


def bits(data: bytes) -> int:
    return int.from_bytes(data, "little")


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is the connector refusing a Send with Error BUSY (overloaded).

    The client library raises the Error answering a Send as ``SendError`` carrying its
    code, and passes it on without sending again; the tests of this module check
    both, so a client that starts retrying BUSY on its own is noticed here."""
    from im.client.errors import SendError
    from im.v1 import wire_pb2

    return isinstance(exc, SendError) and exc.code == wire_pb2.ERROR_CODE_BUSY


class Messaging:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.mode: str = spec["mode"]
        self.duration: float = float(spec["duration"])
        self.grace: float = float(spec.get("grace", 5.0))
        self.quiet: float = float(spec.get("quiet", 1.0))
        self.window: int = int(spec.get("window", 8))
        self.rate: float = float(spec.get("rate", 0.0))
        self.late_s: float = float(spec.get("late_ms", 10.0)) / 1000.0
        self.body_pad = b"x" * max(0, int(spec.get("body_size", 64)) - BODY_HEADER.size)
        self.tag = uuid.uuid4().hex[:8]  # client_msg_ids never repeat across phases
        self.conns: dict[int, Any] = {}
        self.conv_of: dict[int, str] = {s["gid"]: s["conv"] for s in spec["senders"]}
        self.sent: Counter[int] = Counter()
        self.acked: dict[int, Bitmap] = {}
        self.received: dict[int, dict[int, Bitmap]] = {}
        self.errors: Counter[str] = Counter()
        self.refused = 0  # Sends answered with Error BUSY
        self.late = 0
        self.max_lag = 0.0
        self.echo = 0
        self.app_dups = 0
        self.peer_deliveries = 0
        self.arrivals = array("f")
        self.latencies = array("f")
        self.ack_latencies = array("f")
        self.windows: dict[int, asyncio.Semaphore] = {}
        self.inflight: set[asyncio.Task] = set()
        self.start_ns = 0
        self.last_delivery = 0.0
        self.closed_early: Counter[str] = Counter()
        self.consumers: list[asyncio.Task] = []

    async def setup(self) -> dict[str, Any]:
        members = self.spec["members"]
        targets = [(m["address"], m["token"], None) for m in members]
        conns, failures, took = await open_many(
            targets, self.spec.get("heartbeat"), int(self.spec.get("connect_concurrency", 64))
        )
        for member, conn in zip(members, conns, strict=True):
            if conn is not None:
                self.conns[member["gid"]] = conn
        for sender in self.spec["senders"]:
            self.acked[sender["gid"]] = Bitmap()
            self.windows[sender["gid"]] = asyncio.Semaphore(self.window)
        for gid, conn in self.conns.items():
            self.received[gid] = {}
            self.consumers.append(asyncio.create_task(self._consume(gid, conn)))
        return {
            "connected": len(self.conns),
            "connected_gids": list(self.conns),
            "connect_failures": dict(failures),
            "connect_seconds": round(took, 3),
        }

    async def _consume(self, gid: int, conn: Any) -> None:
        from im.v1 import wire_pb2

        unpack = BODY_HEADER.unpack_from
        received = self.received[gid]
        arrivals, latencies = self.arrivals, self.latencies
        async for event in conn.events():
            if not isinstance(event, wire_pb2.Message) or event.content_type != CONTENT_TYPE:
                continue
            now = time.time_ns()
            send_ns, sender, n = unpack(event.body)
            if sender == gid:
                self.echo += 1
                window = self.windows.get(gid)
                if window is not None:
                    window.release()
                continue
            bitmap = received.get(sender)
            if bitmap is None:
                bitmap = received[sender] = Bitmap()
            if not bitmap.add(n):
                self.app_dups += 1
                continue
            self.peer_deliveries += 1
            arrivals.append((now - self.start_ns) / 1e9)
            latencies.append((now - send_ns) / 1e6)
            self.last_delivery = time.monotonic()
        self.closed_early[conn.close_reason or "closed"] += 1

    async def _send(self, gid: int, n: int) -> None:
        from im.client.errors import ClientError

        conn = self.conns.get(gid)
        if conn is None:
            self.errors["not connected"] += 1
            return
        self.sent[gid] += 1
        t0 = time.time_ns()
        body = BODY_HEADER.pack(t0, gid, n) + self.body_pad
        try:
            await conn.send(
                self.conv_of[gid],
                body,
                CONTENT_TYPE,
                client_msg_id=f"{self.tag}-{gid}-{n}",
                ack_timeout=5.0,
                attempts=3,
                busy_retries=0,  # a refusal is a figure of the run, not something to wait out
            )
        except ClientError as exc:
            if is_busy(exc):
                # Refused at once, nothing stored: the answer to overload the server is
                # meant to give, counted apart from failures and not sent again (each
                # open-loop slot is a new message; sending it again would hide the refusal).
                self.refused += 1
            else:
                self.errors[failure_reason(exc)] += 1
            window = self.windows.get(gid)
            if self.mode == "burst" and window is not None:
                window.release()  # no echo will come for it
            return
        self.acked[gid].add(n)
        self.ack_latencies.append((time.time_ns() - t0) / 1e6)

    def _spawn_send(self, gid: int, n: int) -> None:
        task = asyncio.create_task(self._send(gid, n))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    async def run(self, start_wall: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start_wall - time.time()))
        self.start_ns = time.time_ns()
        t0 = loop.time()
        end = t0 + self.duration
        cpu0 = time.process_time()
        senders = [s["gid"] for s in self.spec["senders"] if s["gid"] in self.conns]
        if senders:
            if self.mode == "open":
                await self._open_loop(senders, t0, end)
            else:
                await asyncio.gather(*(self._burst(gid, end) for gid in senders))
        send_end = loop.time()
        # Let the last sends get their acks and deliveries (bounded by the grace period).
        deadline = send_end + self.grace
        self.last_delivery = max(self.last_delivery, time.monotonic())
        while loop.time() < deadline:
            await asyncio.sleep(0.05)
            if not self.inflight and time.monotonic() - self.last_delivery > self.quiet:
                break
        for task in list(self.inflight):
            task.cancel()
        cpu = time.process_time() - cpu0
        return self.result(send_end - t0, cpu)

    async def _open_loop(self, senders: list[int], t0: float, end: float) -> None:
        loop = asyncio.get_running_loop()
        rate = self.rate
        if rate <= 0:
            return
        count = len(senders)
        next_n: Counter[int] = Counter()
        i = 0
        while True:
            now = loop.time()
            if now >= end:
                return
            due = int((now - t0) * rate) + 1  # send i is due at t0 + i / rate
            while i < due:
                lag = now - (t0 + i / rate)
                if lag > self.late_s:
                    self.late += 1
                if lag > self.max_lag:
                    self.max_lag = lag
                gid = senders[i % count]
                self._spawn_send(gid, next_n[gid])
                next_n[gid] += 1
                i += 1
            await asyncio.sleep(max(0.0, min(t0 + i / rate, end) - loop.time()))

    async def _burst(self, gid: int, end: float) -> None:
        loop = asyncio.get_running_loop()
        window = self.windows[gid]
        n = 0
        while True:
            remaining = end - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(window.acquire(), remaining)
            except TimeoutError:
                return
            if loop.time() >= end:
                return
            self._spawn_send(gid, n)
            n += 1

    def result(self, send_seconds: float, cpu: float) -> dict[str, Any]:
        from im.bench.stats import pack_samples

        wire_dups = sum(c.duplicates for c in self.conns.values())
        retransmits = sum(c.retransmits for c in self.conns.values())
        return {
            "sent": sum(self.sent.values()),
            "sent_by": dict(self.sent),
            "acked": {gid: b.to_bytes() for gid, b in self.acked.items()},
            "received": {
                gid: {s: b.to_bytes() for s, b in by.items()} for gid, by in self.received.items()
            },
            "errors": dict(self.errors),
            "refused": self.refused,
            "late": self.late,
            "max_lag_ms": round(self.max_lag * 1000, 3),
            "echo": self.echo,
            "peer_deliveries": self.peer_deliveries,
            "app_dups": self.app_dups,
            "wire_dups": wire_dups,
            "retransmits": retransmits,
            "samples": pack_samples(self.arrivals, self.latencies),
            "ack_latencies": self.ack_latencies.tobytes(),
            "send_seconds": round(send_seconds, 3),
            "cpu_seconds": round(cpu, 3),
            "closed_early": dict(self.closed_early),
        }

    async def close(self) -> None:
        for task in self.consumers:
            task.cancel()
        await close_all(list(self.conns.values()))
