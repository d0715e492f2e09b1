"""Faults of our own processes under traffic: a router or a connector killed with
SIGKILL (then restarted, as Kubernetes would), a router frozen with SIGSTOP."""

from __future__ import annotations

import pytest

from tests.faults.environment import FaultEnv
from tests.faults.scenario import assert_recovered, kill_and_restart, pause, run_scenario

pytestmark = pytest.mark.faults


async def test_router_killed_and_restarted(fault_env: FaultEnv) -> None:
    """The other router takes the dead one's partitions over; the batch it was
    working on is replayed, never lost, never numbered twice."""
    outcome = await run_scenario(
        fault_env, "router kill -9, restart", kill_and_restart("router-1"), replaced="router-1"
    )
    assert_recovered(outcome, fault_env)


async def test_connector_killed_and_restarted(fault_env: FaultEnv) -> None:
    """Its clients lose their sockets, log in again (perhaps onto the other
    connector) and resend under the same client_msg_ids; receivers sync."""
    outcome = await run_scenario(
        fault_env,
        "connector kill -9, restart",
        kill_and_restart("connector-1"),
        replaced="connector-1",
    )
    assert_recovered(outcome, fault_env)
    assert outcome.connections_lost > 0, "no client was on the killed connector: nothing tested"


async def test_router_paused(fault_env: FaultEnv) -> None:
    """SIGSTOP for 15 s: longer than the bus session, so the group moves its
    partitions; after SIGCONT the stale router must not write over the new owner."""
    outcome = await run_scenario(fault_env, "router SIGSTOP 15 s", pause("router-1", 15.0))
    assert_recovered(outcome, fault_env)
