"""Faults of the backends under traffic: each server killed with SIGKILL and started
again, with what a real restart of it keeps (or loses). No process of ours is
restarted: every adapter has to heal by itself."""

from __future__ import annotations

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


async def test_broker_restarted_empty(fault_env: FaultEnv) -> None:
    """The Kafka-protocol broker is memory-only: it comes back without topics,
    records or committed offsets (acked records not yet stored are gone from it)."""
    outcome = await run_scenario(
        fault_env,
        f"broker kill -9 {DOWN_FOR:.0f} s, empty",
        backend_outage("broker"),
        expect_unready=True,
    )
    assert_recovered(outcome, fault_env)


async def test_broker_restarted_empty_with_records_not_yet_consumed(fault_env: FaultEnv) -> None:
    """As above, with the routers 2 s behind when the broker dies: some 40 acked
    messages existed only in its memory and must be published again."""
    outcome = await run_scenario(
        fault_env,
        f"broker kill -9 {DOWN_FOR:.0f} s, empty, 2 s unconsumed",
        broker_outage_with_lag(lag=2.0),
        expect_unready=True,
    )
    assert_recovered(outcome, fault_env)


async def test_redis_restarted_empty(fault_env: FaultEnv) -> None:
    """Presence, sessions and idempotency keys are gone after the restart."""
    outcome = await run_scenario(
        fault_env,
        f"redis kill -9 {DOWN_FOR:.0f} s, empty",
        backend_outage("redis"),
        expect_unready=True,
    )
    assert_recovered(outcome, fault_env)


async def test_zookeeper_loses_its_data(fault_env: FaultEnv) -> None:
    """Every session, ephemeral node (connectors, routers, node-id leases) and root
    is gone: the services must register again. Messages keep flowing meanwhile (the
    registry is read from caches), so readiness is not required to drop."""
    outcome = await run_scenario(
        fault_env,
        f"zookeeper kill -9 {DOWN_FOR:.0f} s, data wiped",
        backend_outage("zookeeper", wipe=True),
    )
    assert_recovered(outcome, fault_env)


async def test_message_store_killed_and_restarted(fault_env: FaultEnv) -> None:
    """The MongoDB-protocol store comes back with its data (journaled writes)."""
    outcome = await run_scenario(
        fault_env,
        f"message store kill -9 {DOWN_FOR:.0f} s",
        backend_outage("store"),
        expect_unready=True,
    )
    assert_recovered(outcome, fault_env)


async def test_mariadb_killed_and_restarted(fault_env: FaultEnv) -> None:
    """Users, conversations, members and cursors unreachable, then back (same datadir)."""
    outcome = await run_scenario(
        fault_env,
        f"mariadb kill -9 {DOWN_FOR:.0f} s",
        backend_outage("mariadb"),
        expect_unready=True,
    )
    assert_recovered(outcome, fault_env)
