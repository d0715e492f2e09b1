"""Opening and closing the load generator's connections (``im.client.Connection``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any


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


def failure_reason(exc: BaseException) -> str:
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
                failures[failure_reason(exc)] += 1

    await asyncio.gather(*(one(i) for i in range(len(targets))))
    return results, failures, time.perf_counter() - started


async def close_all(conns: list[Any], timeout: float = 20.0) -> None:
    live = [c for c in conns if c is not None]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(c.close() for c in live), return_exceptions=True)
