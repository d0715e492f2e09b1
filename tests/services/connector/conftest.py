"""Fixtures of the connector's unit tests: a ConnectorCore on a fake clock with
in-process backends (helpers in helpers.py)."""

from __future__ import annotations

import pytest

from im.auth import TokenIssuer, TokenVerifier, generate_key_pair
from im.clock import FakeClock
from im.config import Settings
from services.connector.service import ConnectorCore
from tests.services.connector.helpers import AllowList, FakeDirectory, memory_backends


@pytest.fixture
def keys():
    private, public = generate_key_pair()
    return TokenIssuer(private, "test", 3600), TokenVerifier(public, "test")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def setup(keys, clock, tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        heartbeat_interval=10,
        heartbeat_misses=3,
        auth_timeout=5,
        retransmit_timeout=2,
        retransmit_attempts=3,
        send_rate_per_second=1,
        send_burst=3,
        max_body_bytes=100,
    )
    backends = memory_backends(clock)
    core = ConnectorCore(
        settings,
        backends,
        keys[1],
        clock=clock,
        authorizer=AllowList({(1, "d:1:2"), (2, "d:1:2")}),
        directory=FakeDirectory(),
    )
    return core, keys[0], backends.bus, backends.presence
