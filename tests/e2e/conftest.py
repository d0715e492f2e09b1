"""Fixtures: one standalone suite for the session, a distributed cluster per module."""

from __future__ import annotations

import pytest

from tests.e2e.harness import RunningSuite, start_cluster, start_suite, stop_cluster, stop_suite


@pytest.fixture(scope="session")
def suite(tmp_path_factory) -> RunningSuite:
    # Short heartbeat and retransmit timings so the timeout tests finish quickly.
    running = start_suite(
        tmp_path_factory.mktemp("suite"),
        heartbeat_interval="1.0",
        retransmit_timeout="0.5",
    )
    yield running
    code = stop_suite(running)
    assert code == 0, f"suite exited with {code} on SIGTERM:\n{running.log()}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, real_server):
    running = start_cluster(tmp_path_factory, real_server)
    yield running
    stop_cluster(running)
