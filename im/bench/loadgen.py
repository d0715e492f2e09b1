"""The load generator: worker processes driven by the bench runner.

Each worker is its own process (multiprocessing, spawn) with its own uvloop event
loop, and talks to the runner over a pipe:

    worker -> ("ready", info)       connections are open, users logged in
    runner -> ("go", start_wall)     every worker starts at the same wall-clock time
    worker -> ("done", result)       counts, bitmaps and latency samples
    runner -> ("close",)             close the connections and exit

Workloads (``KINDS``):

- ``messaging``: connections of the project's client library (``im.client.Connection``)
  to a connector or to the bare relay; senders send to their conversation either
  open loop (at a fixed rate by the clock, whatever the acks do; a send more than
  ``late_ms`` behind its slot is counted late) or in a closed-loop burst (at most
  ``window`` messages per sender between the send call and the sender's own copy
  coming back as a Deliver). Every body starts with (time.time_ns() at the send call,
  sender id, sequence number); receivers take the latency when the Deliver event
  comes out of their connection.
- ``connections``: open many authenticated connections and hold them with heartbeats.
- ``login``: logins through the gateway (``GatewayClient.login``) at a fixed concurrency.
- ``verify_tokens``: ``TokenVerifier.verify`` in a loop (one process = one core).
- ``argon2``: argon2id verifications with the suite's parameters on a thread per core.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import threading
import time
import traceback
import uuid
from array import array
from collections import Counter
from typing import Any

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


# ------------------------------------------------------------------ opening


async def open_connection(
    address: str,
    token: str,
    *,
    heartbeat: float | None = None,
    local_ip: str | None = None,
    timeout: float = 20.0,
) -> Any:
    """An authenticated ``im.client.Connection``.

    ``local_ip`` picks the source address (127.0.0.x): the kernel gives one source
    address only ~28k ports towards one listening socket, so the connections
    scenario spreads large counts over several loopback source addresses.
    ``Connection.open`` has no such option, so that case assembles the same pieces
    (TCP link, Auth handshake, Connection) by hand.
    """
    from im.client import Connection

    if local_ip is None:
        return await Connection.open(
            address,
            token,
            "tcp",
            connect_timeout=timeout,
            auth_timeout=timeout,
            heartbeat_interval=heartbeat,
        )
    from im.client.errors import ConnectionClosed
    from im.client.transports import _split_host_port, _TcpLink
    from im.protocol import DEFAULT_MAX_FRAME

    host, port = _split_host_port(address)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, local_addr=(local_ip, 0))
    except (OSError, TimeoutError) as exc:
        raise ConnectionClosed(f"cannot connect to {address} from {local_ip}: {exc!r}") from exc
    link = _TcpLink(reader, writer, DEFAULT_MAX_FRAME)
    try:
        auth_ok, early = await Connection._authenticate(link, token, timeout)
    except BaseException:
        await link.close()
        raise
    return Connection(
        link,
        auth_ok,
        transport="tcp",
        ack_every=1,
        ack_delay_ms=50.0,
        auto_ack=True,
        dedupe_size=100_000,
        heartbeat_interval=heartbeat,
        heartbeat_misses=3.0,
        early_frames=early,
    )


def _reason(exc: BaseException) -> str:
    from im.client.errors import ApiError, AuthError, SendError, error_code_name

    if isinstance(exc, (AuthError, SendError)):
        return f"{type(exc).__name__}:{error_code_name(exc.code)}"
    if isinstance(exc, ApiError):
        return f"ApiError:{exc.status}:{exc.code}"
    text = str(exc)
    if "Errno" in text:
        start = text.find("Errno")
        return f"{type(exc).__name__}:{text[start : start + 12].strip()}"
    return type(exc).__name__


async def open_many(
    targets: list[tuple[str, str, str | None]],
    heartbeat: float | None,
    concurrency: int,
) -> tuple[list[Any | None], Counter[str], float]:
    """Open (address, token, local_ip) connections, ``concurrency`` at a time."""
    results: list[Any | None] = [None] * len(targets)
    failures: Counter[str] = Counter()
    sem = asyncio.Semaphore(max(1, concurrency))
    started = time.perf_counter()

    async def one(i: int) -> None:
        address, token, local_ip = targets[i]
        async with sem:
            try:
                results[i] = await open_connection(
                    address, token, heartbeat=heartbeat, local_ip=local_ip
                )
            except Exception as exc:
                failures[_reason(exc)] += 1

    await asyncio.gather(*(one(i) for i in range(len(targets))))
    return results, failures, time.perf_counter() - started


async def close_all(conns: list[Any], timeout: float = 20.0) -> None:
    live = [c for c in conns if c is not None]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(c.close() for c in live), return_exceptions=True)


# ------------------------------------------------------------------ messaging


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
            )
        except ClientError as exc:
            self.errors[_reason(exc)] += 1
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


# ------------------------------------------------------------------ connections


class Holding:
    """Open N connections, hold them with heartbeats, report how many stayed."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.conns: list[Any | None] = []

    async def _tokens(self) -> list[tuple[str, str]]:
        auth = self.spec["auth"]
        kind = auth["kind"]
        if kind == "relay":
            from im.bench.relay import relay_token

            return [
                (auth["address"], relay_token(uid, [f"hold:{uid}"])) for uid in auth["user_ids"]
            ]
        if kind == "mint":
            from im.auth import TokenIssuer

            issuer = TokenIssuer(auth["private_key"].encode(), auth["issuer"], auth["ttl"])
            return [
                (auth["address"], issuer.issue(uid, device)[0]) for uid, device in auth["devices"]
            ]
        if kind == "login":
            from im.client import GatewayClient

            out: list[tuple[str, str]] = []
            sem = asyncio.Semaphore(8)

            async def login(username: str, device: str) -> tuple[str, str] | None:
                async with sem, GatewayClient(auth["gateway"]) as gw:
                    try:
                        r = await gw.login(username, auth["password"], device)
                    except Exception:
                        return None
                    return (r.connector.tcp, r.access_token)

            got = await asyncio.gather(*(login(u, d) for u, d in auth["devices"]))
            out = [g for g in got if g is not None]
            self.login_failures = len(got) - len(out)
            return out
        raise ValueError(f"unknown auth kind {kind!r}")

    async def setup(self) -> dict[str, Any]:
        self.login_failures = 0
        t = time.perf_counter()
        pairs = await self._tokens()
        token_seconds = time.perf_counter() - t
        ips = self.spec.get("local_ips") or [None]
        targets = [(addr, tok, ips[i % len(ips)]) for i, (addr, tok) in enumerate(pairs)]
        self.conns, failures, took = await open_many(
            targets, self.spec.get("heartbeat"), int(self.spec.get("connect_concurrency", 200))
        )
        if self.login_failures:
            failures["login failed"] += self.login_failures
        return {
            "opened": sum(1 for c in self.conns if c is not None),
            "failures": dict(failures),
            "connect_seconds": round(took, 3),
            "token_seconds": round(token_seconds, 3),
        }

    async def run(self, start_wall: float) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start_wall - time.time()))
        live = [c for c in self.conns if c is not None]
        pings0 = sum(c.pings for c in live)
        await asyncio.sleep(float(self.spec["hold"]))
        still = [c for c in live if not c.closed]
        reasons = Counter(c.close_reason or "closed" for c in live if c.closed)
        rtts = [c.last_rtt * 1000 for c in still if c.last_rtt is not None]
        return {
            "held": len(still),
            "dropped": len(live) - len(still),
            "drop_reasons": dict(reasons),
            "pings": sum(c.pings for c in live) - pings0,
            "ping_rtts_ms": array("f", rtts).tobytes(),
        }

    async def close(self) -> None:
        await close_all(self.conns, timeout=30)


# ------------------------------------------------------------------ login


class Logins:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    async def setup(self) -> dict[str, Any]:
        return {}

    async def run(self, start_wall: float) -> dict[str, Any]:
        from im.client import GatewayClient

        await asyncio.sleep(max(0.0, start_wall - time.time()))
        loop = asyncio.get_running_loop()
        end = loop.time() + float(self.spec["duration"])
        users = self.spec["users"]
        password = self.spec["password"]
        ok = 0
        failures: Counter[str] = Counter()
        latencies = array("f")
        counter = iter(range(10**12))

        async def worker(w: int) -> None:
            nonlocal ok
            async with GatewayClient(self.spec["gateway"], timeout=30.0) as gw:
                while loop.time() < end:
                    i = next(counter)
                    username = users[i % len(users)]
                    t = time.perf_counter()
                    try:
                        await gw.login(username, password, f"bench-login-{w}")
                    except Exception as exc:
                        failures[_reason(exc)] += 1
                        continue
                    ok += 1
                    latencies.append((time.perf_counter() - t) * 1000)

        t0 = loop.time()
        await asyncio.gather(*(worker(w) for w in range(int(self.spec["concurrency"]))))
        return {
            "ok": ok,
            "failures": dict(failures),
            "seconds": round(loop.time() - t0, 3),
            "latencies": latencies.tobytes(),
        }

    async def close(self) -> None:
        return None


# ------------------------------------------------------------------ CPU loops


class VerifyTokens:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    async def setup(self) -> dict[str, Any]:
        from im.auth import TokenIssuer, TokenVerifier, generate_key_pair

        private, public = generate_key_pair()
        self.token = TokenIssuer(private, "im-gateway", 3600).issue(42, "bench")[0]
        self.verifier = TokenVerifier(public, "im-gateway")
        self.verifier.verify(self.token)
        return {}

    async def run(self, start_wall: float) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start_wall - time.time()))
        verify, token = self.verifier.verify, self.token
        end = time.perf_counter() + float(self.spec["duration"])
        count = 0
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            for _ in range(100):
                verify(token)
            count += 100
        return {"count": count, "seconds": round(time.perf_counter() - t0, 4)}

    async def close(self) -> None:
        return None


class Argon2Alone:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    async def setup(self) -> dict[str, Any]:
        from argon2 import PasswordHasher, Type

        self.hasher = PasswordHasher(
            time_cost=int(self.spec["time_cost"]),
            memory_cost=int(self.spec["memory_kib"]),
            parallelism=int(self.spec["parallelism"]),
            type=Type.ID,
        )
        self.password = "bench-password-1"
        self.hash = self.hasher.hash(self.password)
        return {}

    async def run(self, start_wall: float) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start_wall - time.time()))
        threads = int(self.spec["threads"])
        end = time.perf_counter() + float(self.spec["duration"])
        counts = [0] * threads

        def loop(i: int) -> None:
            while time.perf_counter() < end:
                self.hasher.verify(self.hash, self.password)
                counts[i] += 1

        t0 = time.perf_counter()
        pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        await asyncio.get_running_loop().run_in_executor(None, lambda: [t.join() for t in pool])
        return {"count": sum(counts), "seconds": round(time.perf_counter() - t0, 4)}

    async def close(self) -> None:
        return None


KINDS = {
    "messaging": Messaging,
    "connections": Holding,
    "login": Logins,
    "verify_tokens": VerifyTokens,
    "argon2": Argon2Alone,
}


# ------------------------------------------------------------------ process entry


def worker_entry(kind: str, spec: dict[str, Any], pipe: Any) -> None:
    """Target of each worker process."""
    from im.bench.limits import raise_nofile
    from im.runtime import install_uvloop

    raise_nofile(int(spec.get("nofile", 0)) or None)
    install_uvloop()
    try:
        asyncio.run(_serve(kind, spec, pipe))
    except BaseException:
        with contextlib.suppress(Exception):
            pipe.send(("error", traceback.format_exc()))
    finally:
        with contextlib.suppress(Exception):
            pipe.close()
        os._exit(0)  # do not wait for lingering sockets or threads


async def _serve(kind: str, spec: dict[str, Any], pipe: Any) -> None:
    loop = asyncio.get_running_loop()

    async def recv() -> Any:
        return await loop.run_in_executor(None, pipe.recv)

    workload = KINDS[kind](spec)
    try:
        info = await workload.setup()
        pipe.send(("ready", info))
        msg = await recv()
        if msg[0] != "go":
            return
        result = await workload.run(float(msg[1]))
        pipe.send(("done", result))
        await recv()  # "close"
    finally:
        with contextlib.suppress(Exception):
            await workload.close()
