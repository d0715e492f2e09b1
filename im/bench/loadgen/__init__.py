"""The load generator: worker processes driven by the bench runner.

Each worker is its own process (multiprocessing, spawn) with its own uvloop event
loop, and talks to the runner over a pipe:

    worker -> ("ready", info)       connections are open, users logged in
    runner -> ("go", start_wall)     every worker starts at the same wall-clock time
    worker -> ("done", result)       counts, bitmaps and latency samples
    runner -> ("close",)             close the connections and exit

Workloads (``KINDS``), one module each:

- ``messaging`` (``messaging.py``): connections of the project's client library
  (``im.client.Connection``) to a connector or to the bare relay; senders send to their
  conversation either open loop (at a fixed rate by the clock, whatever the acks do; a
  send more than ``late_ms`` behind its slot is counted late) or in a closed-loop burst
  (at most ``window`` messages per sender between the send call and the sender's own
  copy coming back as a Deliver). Every body starts with (time.time_ns() at the send
  call, sender id, sequence number); receivers take the latency when the Deliver event
  comes out of their connection.
- ``connections`` (``holding.py``): open many authenticated connections and hold them
  with heartbeats.
- ``login`` (``login.py``): logins through the gateway (``GatewayClient.login``) at a
  fixed concurrency.
- ``verify_tokens`` (``login.py``): ``TokenVerifier.verify`` in a loop (one process =
  one core).
- ``argon2`` (``login.py``): argon2id verifications with the suite's parameters on a
  thread per core.

Opening and closing connections is shared by them (``connect.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import traceback
from typing import Any

from im.bench.loadgen.holding import Holding
from im.bench.loadgen.login import Argon2Alone, Logins, VerifyTokens
from im.bench.loadgen.messaging import Messaging

KINDS = {
    "messaging": Messaging,
    "connections": Holding,
    "login": Logins,
    "verify_tokens": VerifyTokens,
    "argon2": Argon2Alone,
}


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
