"""The course of one fault test: traffic before, during and after one fault, then
the checks (tests/faults/verify.py) and a row in the session's table.

Timeline: set up users -> traffic for BEFORE s -> the fault -> traffic until every
sender is acked again and every receiver gets live messages again, then SETTLE s more
(bounded by RECOVERY_BOUND) -> stop sending, wait for what is in flight to be acked
-> a grace period for delivery -> every receiver reconnects and syncs -> read the
histories and judge.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

from tests.faults.environment import FaultEnv
from tests.faults.traffic import ReadinessProbe, Traffic, fresh_pair_chat, now, wait_ready
from tests.faults.verify import (
    RESULTS,
    Outcome,
    evaluate,
    live_resumed_after,
    seconds,
    sends_resumed_after,
)

BEFORE = 8.0  # seconds of traffic before the fault
SETTLE = 8.0  # seconds of traffic once sends and live delivery resumed
RECOVERY_BOUND = 60.0  # seconds after the fault's end for both to resume
DRAIN_TIMEOUT = 30.0  # for the sends in flight to be acked once sending stops
DELIVERY_GRACE = 10.0  # for delivery to catch up before the receivers resync
RESYNC_TIMEOUT = 30.0
HISTORY_TIMEOUT = 30.0
FRESH_CLIENTS_TIMEOUT = 30.0  # for two new users to chat once the fault is over
READY_TIMEOUT = 15.0  # for /readyz to answer 200 at the end
REGISTRY_TIMEOUT = 15.0  # for the registry to hold what it held before the fault
SCENARIO_TIMEOUT = 330.0

# Does the fault; returns when it ended (time.monotonic()): the restart or SIGCONT,
# or, for a process of ours that is killed, the kill.
FaultAction = Callable[[FaultEnv], Awaitable[float]]

DOWN_FOR = 10.0  # how long a killed backend stays down
RESTART_DELAY = 3.0  # before a killed process of ours is started again


# ------------------------------------------------------------------- faults


def kill_and_restart(name: str, delay: float = RESTART_DELAY) -> FaultAction:
    """kill -9 a process of ours; start it again ``delay`` seconds later."""

    async def inject(env: FaultEnv) -> float:
        await asyncio.to_thread(env.kill, name)
        killed = now()
        await asyncio.sleep(delay)
        await asyncio.to_thread(env.restart, name)
        return killed

    return inject


def pause(name: str, seconds_: float) -> FaultAction:
    """SIGSTOP a process of ours, SIGCONT it ``seconds_`` later."""

    async def inject(env: FaultEnv) -> float:
        env.pause(name)
        try:
            await asyncio.sleep(seconds_)
        finally:
            env.resume(name)
        return now()

    return inject


def backend_outage(server: str, down: float = DOWN_FOR, wipe: bool = False) -> FaultAction:
    """kill -9 one of our backends (``Backends`` attribute name), optionally wipe its
    data, start it again after ``down`` seconds; the fault ends when it answers."""

    async def inject(env: FaultEnv) -> float:
        target = getattr(env.backends, server)
        await asyncio.to_thread(target.kill)
        if wipe:
            await asyncio.to_thread(target.wipe)
        await asyncio.sleep(down)
        await asyncio.to_thread(target.start)
        await asyncio.to_thread(target.wait_ready, 60.0)
        return now()

    return inject


def broker_outage_with_lag(lag: float = 2.0, down: float = DOWN_FOR) -> FaultAction:
    """The routers stop consuming (SIGSTOP) for ``lag`` seconds, then the broker is
    killed and they go on (SIGCONT): the records acked meanwhile were only in the
    broker's memory, so the connectors have to publish them again once it is back."""

    async def inject(env: FaultEnv) -> float:
        routers = [name for name in env.cluster.procs if name.startswith("router")]
        for name in routers:
            env.pause(name)
        try:
            await asyncio.sleep(lag)
            await asyncio.to_thread(env.backends.broker.kill)
        finally:
            for name in routers:
                env.resume(name)
        await asyncio.sleep(down)
        await asyncio.to_thread(env.backends.broker.start)
        await asyncio.to_thread(env.backends.broker.wait_ready, 60.0)
        return now()

    return inject


# ----------------------------------------------------------------- the run


async def wait_for_recovery(traffic: Traffic, fault_end: float) -> None:
    """Keep the traffic going until sends and live delivery have resumed everywhere,
    then SETTLE seconds more; at most RECOVERY_BOUND seconds after the fault."""
    while now() - fault_end < RECOVERY_BOUND:
        if (
            sends_resumed_after(traffic, fault_end) is not None
            and live_resumed_after(traffic, fault_end) is not None
        ):
            await asyncio.sleep(SETTLE)
            return
        await asyncio.sleep(0.25)


async def run_scenario(
    env: FaultEnv,
    fault: str,
    inject: FaultAction,
    *,
    replaced: str | None = None,
    expect_unready: bool = False,
) -> Outcome:
    """Run one fault under traffic; the outcome is also added to the session table.
    ``replaced``: the process of ours the fault kills and restarts. ``expect_unready``:
    the fault takes away a backend the message path needs (bus, Redis, message store,
    SQL database), so the gateway's /readyz must fail while it lasts ("a dependency
    that is gone makes readiness false, never a silent stall")."""
    began = now()
    try:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            outcome = await _run(env, fault, inject, replaced, expect_unready)
    except BaseException as exc:
        RESULTS.append(Outcome(fault, error=f"{type(exc).__name__}: {exc}", duration=now() - began))
        if isinstance(exc, Exception):
            logs = "\n".join(env.log_digest())
            raise AssertionError(f"{fault}: the run broke: {exc!r}\n{logs}\n{env.where()}") from exc
        raise
    outcome.duration = now() - began
    RESULTS.append(outcome)
    return outcome


async def _run(
    env: FaultEnv, fault: str, inject: FaultAction, replaced: str | None, expect_unready: bool
) -> Outcome:
    gateway = env.cluster.gateway_url
    traffic = Traffic(gateway)
    probe = ReadinessProbe(gateway)
    try:
        await traffic.setup()
        traffic.start()
        probe.start()
        began = now()
        await asyncio.sleep(BEFORE)
        census = await asyncio.to_thread(env.registry_census)
        fault_began = now()
        fault_end = await inject(env)
        await wait_for_recovery(traffic, fault_end)
        stopped = now()
        await traffic.stop_sending(DRAIN_TIMEOUT)
        await traffic.wait_delivered(DELIVERY_GRACE)
        unsynced = await traffic.resync_receivers(RESYNC_TIMEOUT)
        history = await traffic.history(HISTORY_TIMEOUT)
        fresh = await fresh_pair_chat(gateway, FRESH_CLIENTS_TIMEOUT)
        not_ready = await wait_ready(gateway, READY_TIMEOUT)
        registry = await registry_problem(env, census, REGISTRY_TIMEOUT)

        outcome = evaluate(fault, traffic, history, fault_end)
        outcome.not_ready_for = probe.not_ready_seconds(fault_began)
        if expect_unready and not probe.failed_between(fault_began, fault_end):
            outcome.problems.append(
                "gateway /readyz answered 200 all through the outage of a backend the "
                "message path needs"
            )
        outcome.problems.extend(recovery_problems(outcome, unsynced, fresh, not_ready))
        if registry is not None:
            outcome.problems.append(registry)
        outcome.problems.extend(env.process_problems(replaced))
        outcome.details.insert(
            0,
            f"timeline: traffic from 0 s, fault at {fault_began - began:.1f} s, fault ended "
            f"at {fault_end - began:.1f} s, sending stopped at {stopped - began:.1f} s; "
            f"/readyz ready again {seconds(probe.ready_again_after(fault_began))} after "
            "the fault began",
        )
        return outcome
    finally:
        await probe.stop()
        await traffic.close()


async def registry_problem(env: FaultEnv, before: Counter[str], timeout: float) -> str | None:
    """None once ZooKeeper holds as many entries of ours per folder as before the
    fault (connectors, routers, node-id leases: re-created by the adapters after a
    session loss; a restarted process's under new names, its old ones expired)."""
    deadline = now() + timeout
    while True:
        try:
            after = await asyncio.to_thread(env.registry_census)
        except Exception as exc:
            after, error = Counter(), repr(exc)
        else:
            error = ""
            if after == before:
                return None
        if now() > deadline:
            return (
                f"ZooKeeper registry not restored: ephemeral nodes per folder before the "
                f"fault {dict(before)}, {timeout:.0f} s after recovery {dict(after)} {error}"
            )
        await asyncio.sleep(0.5)


def recovery_problems(
    outcome: Outcome, unsynced: list[str], fresh: str | None, not_ready: str | None
) -> list[str]:
    """Healed means: sends acked and messages pushed live again, every client able to
    reconnect, new users able to chat, and the gateway ready."""
    problems = []
    if outcome.sends_resumed_after is None:
        problems.append(
            f"some sender never had a message acked again within {RECOVERY_BOUND:.0f} s "
            "of the fault's end"
        )
    if outcome.live_resumed_after is None:
        problems.append(
            f"some receiver never got a new message live within {RECOVERY_BOUND:.0f} s "
            "of the fault's end (only by sync, if at all)"
        )
    if unsynced:
        problems.append(f"receivers that could not reconnect to sync: {unsynced}")
    if fresh is not None:
        problems.append(fresh)
    if not_ready is not None:
        problems.append(f"gateway /readyz still failing at the end: {not_ready}")
    return problems


def failure_report(outcome: Outcome, env: FaultEnv) -> str:
    """Everything needed to tell what went wrong, for the assertion message."""
    lines = [
        f"{outcome.fault}: {len(outcome.problems)} problem(s)",
        outcome.counts(),
        *(f"  - {p}" for p in outcome.problems),
        *outcome.details,
        "service logs (warnings/errors, last lines):",
        *(f"  {line}" for line in env.log_digest()),
        env.where(),
    ]
    return "\n".join(lines)


def assert_recovered(outcome: Outcome, env: FaultEnv) -> None:
    assert not outcome.problems, failure_report(outcome, env)
