"""Workload ``connections``: open many authenticated connections and hold them."""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter
from typing import Any

from im.bench.loadgen.connect import close_all, open_many


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
