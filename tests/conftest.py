"""Shared fixtures: addresses of the real servers for integration tests.

Integration tests (marked ``integration``) need the servers that
``scripts/dev-services.sh up`` starts. Where one is not reachable, the test is
skipped with a note saying how to start it; under CI (``CI=true``) it fails instead,
so CI never passes by skipping.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

SERVERS = {
    "mysql": os.environ.get(
        "IM_TEST_MYSQL_URL", "mysql+pymysql://im_test:im_test@127.0.0.1:3306/im_test"
    ),
    "redis": os.environ.get("IM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    # The store's own 5 s socket timeout is for production; SecantusDB, a Python server
    # journaling every write, has been seen to stall past it on a busy CI machine.
    "mongo": os.environ.get(
        "IM_TEST_MONGO_URL",
        "mongodb://127.0.0.1:27017/im_test?retryWrites=false&socketTimeoutMS=30000",
    ),
    # Tansu does not wake a waiting fetch: poll every 10 ms (a real Kafka needs not).
    "kafka": os.environ.get("IM_TEST_KAFKA_URL", "kafka://127.0.0.1:9092?fetch_max_wait_ms=10"),
    "zookeeper": os.environ.get("IM_TEST_ZK_URL", "zk://127.0.0.1:2181/im-test"),
}

_skipped: list[str] = []


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    host_port = parsed.netloc.rsplit("@", 1)[-1].split(",")[0]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            return True
    except OSError:
        return False


def server_url(name: str) -> str:
    """The URL of a real server, or skip (fail under CI) if it is not running."""
    url = SERVERS[name]
    if not _reachable(url):
        message = f"{name} not reachable at {url}: start it with `scripts/dev-services.sh up`"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI must not skip integration tests)")
        _skipped.append(message)
        pytest.skip(message)
    return url


@pytest.fixture
def mysql_url() -> str:
    return server_url("mysql")


@pytest.fixture
def redis_url() -> str:
    return server_url("redis")


@pytest.fixture
def mongo_url() -> str:
    return server_url("mongo")


@pytest.fixture
def kafka_url() -> str:
    return server_url("kafka")


@pytest.fixture
def zk_url() -> str:
    return server_url("zookeeper")


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if _skipped:
        terminalreporter.section("integration tests skipped")
        for line in sorted(set(_skipped)):
            terminalreporter.write_line(line)
        terminalreporter.write_line(
            f"{len(_skipped)} integration test(s) skipped: run `scripts/dev-services.sh up` "
            "and `make test` again."
        )


@pytest.fixture(scope="session")
def real_server():
    """``real_server(name)`` -> URL, for fixtures of wider scope than a test."""
    return server_url


@pytest.fixture(autouse=True)
def _restore_umask():  # type: ignore[no-untyped-def]
    """A suite started in-process makes its data private by setting the process umask;
    the next test gets the umask the run started with."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


@pytest.fixture
def recorded_spans():  # type: ignore[no-untyped-def]
    """Traces recorded in memory for one test: ``recorded_spans.get_finished_spans()``."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from im import tracing

    exporter = InMemorySpanExporter()
    tracing.configure(SimpleSpanProcessor(exporter), "test")
    try:
        yield exporter
    finally:
        tracing.disable()
