"""A connection's log lines name it: the transport makes the connection's context the
context of its frames and of the work they start, so a send path warning names the
connection, the user, the device, and (per call) the conversation and message."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from im import logs
from im.protocol import encode_frame
from im.v1 import wire_pb2
from services.connector.transport import TcpProtocol
from tests.services.connector.test_sendpath import FlakyClaims
from tests.services.connector.test_transport import FakeTransport


@pytest.fixture
def connector_lines() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("im.connector")
    logger.addHandler(handler)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)


def frame(**kind) -> bytes:  # type: ignore[no-untyped-def]
    return encode_frame(wire_pb2.Frame(**kind))


async def test_a_send_path_warning_names_the_connection_and_the_message(
    setup,
    clock,
    connector_lines,  # type: ignore[no-untyped-def]
) -> None:
    core, issuer, _bus, _kv = setup
    core.backends.idempotency = FlakyClaims(clock, {"c1": 2})
    protocol = TcpProtocol(core)
    protocol.connection_made(FakeTransport())  # type: ignore[arg-type]
    token, _ = issuer.issue(1, "tablet")
    protocol.data_received(frame(auth=wire_pb2.Auth(token=token)))
    await core.wait_background()
    send = wire_pb2.Send(client_msg_id="c1", conversation_id="d:1:2", body=b"hi")
    protocol.data_received(frame(send=send))
    await core.wait_background()

    lines = [json.loads(line) for line in connector_lines.getvalue().splitlines()]
    warning = next(line for line in lines if line["message"].startswith("idempotency claim failed"))
    conn_id = protocol._conn.conn_id  # type: ignore[union-attr]
    assert warning["service"] == "connector"
    assert (warning["conn_id"], warning["user_id"], warning["device_id"]) == (conn_id, 1, "tablet")
    assert warning["conversation_id"] == "d:1:2"
    assert isinstance(warning["msg_id"], int) and warning["msg_id"] > 0
    assert "conn_id" not in logs.current()  # nothing leaked into the caller's context
