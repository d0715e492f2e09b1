"""Faults of the backends under traffic: each server killed with SIGKILL and started
again, with what a real restart of it keeps (or loses). No process of ours is
restarted: every adapter has to heal by itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.faults.environment import FaultEnv
from tests.faults.scenario import (
    DOWN_FOR,
    assert_recovered,
    backend_outage,
    broker_outage_with_lag,
    run_scenario,
)

pytestmark = pytest.mark.faults


@dataclass(frozen=True)
class Outage:
    label: str
    fault: Callable  # what run_scenario injects
    # The backend is on the message path: /readyz must fail while it is away. Not
    # ZooKeeper: messages keep flowing meanwhile (the registry is read from caches).
    expect_unready: bool = True


OUTAGES = {
    # Memory-only: it comes back without topics, records or committed offsets (acked
    # records not yet stored are gone from it and must be published again).
    "broker": Outage(f"broker kill -9 {DOWN_FOR:.0f} s, empty", backend_outage("broker")),
    # As above, with the routers 2 s behind when the broker dies: some 40 acked
    # messages existed only in its memory.
    "broker-lagging": Outage(
        f"broker kill -9 {DOWN_FOR:.0f} s, empty, 2 s unconsumed", broker_outage_with_lag(lag=2.0)
    ),
    # Presence, sessions and idempotency keys are gone after the restart.
    "redis": Outage(f"redis kill -9 {DOWN_FOR:.0f} s, empty", backend_outage("redis")),
    # Every session, ephemeral node (connectors, routers, node-id leases) and root is
    # gone: the services must register again.
    "zookeeper": Outage(
        f"zookeeper kill -9 {DOWN_FOR:.0f} s, data wiped",
        backend_outage("zookeeper", wipe=True),
        expect_unready=False,
    ),
    # The MongoDB-protocol store comes back with its data (journaled writes).
    "store": Outage(f"message store kill -9 {DOWN_FOR:.0f} s", backend_outage("store")),
    # Users, conversations, members and cursors unreachable, then back (same datadir).
    "mariadb": Outage(f"mariadb kill -9 {DOWN_FOR:.0f} s", backend_outage("mariadb")),
}


@pytest.mark.parametrize("name", list(OUTAGES))
async def test_backend_outage(fault_env: FaultEnv, name: str) -> None:
    outage = OUTAGES[name]
    outcome = await run_scenario(
        fault_env, outage.label, outage.fault, expect_unready=outage.expect_unready
    )
    assert_recovered(outcome, fault_env)
