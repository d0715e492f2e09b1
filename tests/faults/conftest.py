"""Fixtures of the fault suite: a fresh environment (our own backends on free ports
plus a cluster on them) per test, always torn down, and the session's table of
fault runs in the terminal summary."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.backends import ServerUnavailable, check_installed, kill_all_spawned
from tests.faults.environment import FaultEnv
from tests.faults.verify import RESULTS, table


@pytest.fixture
def fault_env(tmp_path: Path) -> Iterator[FaultEnv]:
    try:
        check_installed()
    except ServerUnavailable as exc:
        message = f"{exc}: run `scripts/dev-services.sh up` once to install the servers"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI must not skip the fault suite)")
        pytest.skip(message)
    env = FaultEnv.create(tmp_path)
    try:
        env.start()
        yield env
    finally:
        env.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if not RESULTS:
        return
    terminalreporter.section("fault runs")
    for line in table(RESULTS):
        terminalreporter.write_line(line)
    terminalreporter.write_line(
        "delivered = (stored message, receiving device) pairs seen; live/sync = how they "
        "came; resumed after = from the restart/SIGCONT (the kill for a process of ours) "
        "until every sender was acked again / every receiver got a new message live."
    )


def pytest_sessionfinish(session, exitstatus):  # type: ignore[no-untyped-def]
    # Whatever a broken teardown left running: none of it may outlive the session.
    kill_all_spawned()
