"""Workloads ``login`` (logins through the gateway), ``verify_tokens`` and ``argon2``
(the CPU cost of a token verification and of argon2id alone, for comparison)."""

from __future__ import annotations

import asyncio
import threading
import time
from array import array
from collections import Counter
from typing import Any

from im.bench.loadgen.connect import failure_reason


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
                        failures[failure_reason(exc)] += 1
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
