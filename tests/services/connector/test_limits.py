"""The per-address cap on unauthenticated sockets, in the core (no sockets)."""

from __future__ import annotations

import pytest

from im.clock import FakeClock
from im.config import Settings
from im.v1 import wire_pb2
from services.connector.limits import REFUSED_MESSAGE, WS_POLICY_VIOLATION
from services.connector.service import ConnectorCore
from tests.services.connector.helpers import AllowList, RecordingConn, memory_backends

E = wire_pb2
CAP = 3


@pytest.fixture
def core(keys, clock: FakeClock, tmp_path) -> ConnectorCore:
    settings = Settings(data_dir=tmp_path, auth_timeout=5, max_unauthenticated_per_address=CAP)
    backends = memory_backends(clock)
    return ConnectorCore(settings, backends, keys[1], clock=clock, authorizer=AllowList(set()))


def open_from(core: ConnectorCore, address: str) -> RecordingConn:
    conn = RecordingConn(core.new_conn_id(), core.clock.monotonic())
    conn.peer = address
    core.opened(conn)
    return conn


def refused(conn: RecordingConn) -> bool:
    if not conn.was_closed or not conn.frames:
        return False
    error = conn.frames[-1].error
    return error.code == E.ERROR_CODE_RATE_LIMITED and error.message == REFUSED_MESSAGE


async def test_the_socket_over_the_cap_is_refused_with_a_reason(core: ConnectorCore) -> None:
    held = [open_from(core, "10.0.0.1") for _ in range(CAP)]
    assert not any(c.was_closed for c in held)
    extra = open_from(core, "10.0.0.1")
    assert refused(extra)
    assert extra.close_reason == (WS_POLICY_VIOLATION, REFUSED_MESSAGE)
    assert extra.conn_id not in core.conns
    assert core.unauthenticated.refused == 1
    # Another address is not affected.
    assert not open_from(core, "10.0.0.2").was_closed


async def test_authenticating_frees_a_slot(core: ConnectorCore, keys) -> None:
    held = [open_from(core, "10.0.0.1") for _ in range(CAP)]
    token, _ = keys[0].issue(1, "d1")
    core.on_frame(held[0], wire_pb2.Frame(auth=wire_pb2.Auth(token=token)))
    await core.wait_background()
    assert held[0].kinds() == ["auth_ok"]
    assert core.unauthenticated.open_from("10.0.0.1") == CAP - 1
    assert not open_from(core, "10.0.0.1").was_closed
    assert refused(open_from(core, "10.0.0.1"))


async def test_closing_and_the_auth_deadline_free_slots(
    core: ConnectorCore, clock: FakeClock
) -> None:
    held = [open_from(core, "10.0.0.1") for _ in range(CAP)]
    core.closed(held[0])  # the client went away
    newer = open_from(core, "10.0.0.1")
    assert not newer.was_closed
    assert refused(open_from(core, "10.0.0.1"))

    clock.advance(6)  # past auth_timeout: every held one is closed
    core.tick()
    assert core.unauthenticated.open_from("10.0.0.1") == 0
    assert not open_from(core, "10.0.0.1").was_closed


async def test_a_refused_socket_closing_later_frees_nothing(core: ConnectorCore) -> None:
    [open_from(core, "10.0.0.1") for _ in range(CAP)]
    extra = open_from(core, "10.0.0.1")
    core.closed(extra)  # the transport reports the refused socket gone
    assert core.unauthenticated.open_from("10.0.0.1") == CAP
    assert refused(open_from(core, "10.0.0.1"))


async def test_zero_disables_the_cap(keys, clock: FakeClock, tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, max_unauthenticated_per_address=0)
    core = ConnectorCore(
        settings, memory_backends(clock), keys[1], clock=clock, authorizer=AllowList(set())
    )
    assert not any(open_from(core, "10.0.0.1").was_closed for _ in range(100))
