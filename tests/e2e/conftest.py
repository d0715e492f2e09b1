"""Fixtures: one standalone suite for the session, a distributed cluster per module,
``target``: the same test against both, and ``browser`` for the web page tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.harness import RunningSuite, start_cluster, start_suite, stop_cluster, stop_suite
from tests.e2e.helpers import ADMIN_TOKEN

if TYPE_CHECKING:
    from playwright.sync_api import Browser

# Short enough for the presence tests to wait out, long enough for a quick reconnect.
PRESENCE_DEBOUNCE = "3.0"


@pytest.fixture(scope="session")
def suite(tmp_path_factory) -> RunningSuite:
    # Short heartbeat and retransmit timings so the timeout tests finish quickly.
    running = start_suite(
        tmp_path_factory.mktemp("suite"),
        heartbeat_interval="1.0",
        retransmit_timeout="0.5",
        presence_debounce_seconds=PRESENCE_DEBOUNCE,
        admin_token=ADMIN_TOKEN,  # the admin API (tests/e2e/test_admin.py)
    )
    yield running
    code = stop_suite(running)
    assert code == 0, f"suite exited with {code} on SIGTERM:\n{running.log()}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, real_server):
    running = start_cluster(
        tmp_path_factory,
        real_server,
        presence_debounce_seconds=PRESENCE_DEBOUNCE,
        admin_token=ADMIN_TOKEN,
    )
    yield running
    stop_cluster(running)


@dataclass
class Target:
    """Where a test that runs in both modes talks to."""

    gateway: str
    cluster: object | None = None  # im.cluster.Cluster in distributed mode
    gateway_grpc: str = ""  # host:port of the gateway's MessageService
    internal_tls: Path | None = None  # folder of the suite's ca.crt, tls.crt, tls.key


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("standalone"),
        pytest.param("distributed", marks=pytest.mark.integration),
    ],
)
def target(request) -> Target:  # type: ignore[no-untyped-def]
    if request.param == "standalone":
        suite = request.getfixturevalue("suite")
        return Target(
            suite.gateway,
            gateway_grpc=f"127.0.0.1:{suite.env['IM_GATEWAY_GRPC_PORT']}",
            internal_tls=Path(suite.env["IM_DATA_DIR"]) / "tls" / "internal",
        )
    cluster = request.getfixturevalue("cluster")
    return Target(
        cluster.gateway_url,
        cluster,
        gateway_grpc=cluster.gateway_grpc,
        internal_tls=cluster.log_dir / "tls" / "internal",
    )


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI must not skip the browser test)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium driven by Playwright (tests/e2e/web.py opens pages in it).
    Without either the test is skipped, but fails under CI (scripts/dev-services.sh up
    installs chromium)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: run `make install`")
    chromium = os.environ.get("IM_TEST_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        _missing("chromium not found: `scripts/dev-services.sh up` installs it (apt)")
    with sync_playwright() as playwright:
        # Root (CI, containers) cannot use chromium's sandbox; the machine's network is
        # closed, so nothing in the background may try to go out.
        args = ["--no-sandbox", "--disable-gpu", "--disable-quic"]
        args.append("--disable-background-networking")
        launched = playwright.chromium.launch(executable_path=chromium, args=args)
        yield launched
        launched.close()
