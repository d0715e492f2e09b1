"""Fixtures: one standalone suite for the session, a distributed cluster per module,
and ``target``: the same test against both."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.e2e.harness import RunningSuite, start_cluster, start_suite, stop_cluster, stop_suite
from tests.e2e.helpers import ADMIN_TOKEN


@pytest.fixture(scope="session")
def suite(tmp_path_factory) -> RunningSuite:
    # Short heartbeat and retransmit timings so the timeout tests finish quickly.
    running = start_suite(
        tmp_path_factory.mktemp("suite"),
        heartbeat_interval="1.0",
        retransmit_timeout="0.5",
        admin_token=ADMIN_TOKEN,  # the admin API (tests/e2e/test_admin.py)
    )
    yield running
    code = stop_suite(running)
    assert code == 0, f"suite exited with {code} on SIGTERM:\n{running.log()}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, real_server):
    running = start_cluster(tmp_path_factory, real_server, admin_token=ADMIN_TOKEN)
    yield running
    stop_cluster(running)


@dataclass
class Target:
    """Where a test that runs in both modes talks to."""

    gateway: str
    cluster: object | None = None  # im.cluster.Cluster in distributed mode


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("standalone"),
        pytest.param("distributed", marks=pytest.mark.integration),
    ],
)
def target(request) -> Target:  # type: ignore[no-untyped-def]
    if request.param == "standalone":
        return Target(request.getfixturevalue("suite").gateway)
    cluster = request.getfixturevalue("cluster")
    return Target(cluster.gateway_url, cluster)
