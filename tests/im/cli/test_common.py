"""What every imctl client command shares: options, devices, output shapes."""

from __future__ import annotations

import json

import pytest

from im.cli.common import DEFAULT_GATEWAY, default_device, event_json
from im.cli.main import build_parser, main
from im.v1 import wire_pb2


def test_gateway_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IM_GATEWAY_URL", raising=False)
    args = build_parser().parse_args(["register", "alice", "-p", "pw"])
    assert args.gateway == DEFAULT_GATEWAY
    assert (args.username, args.password, args.display_name) == ("alice", "pw", None)

    monkeypatch.setenv("IM_GATEWAY_URL", "http://gw:9000")
    assert build_parser().parse_args(["listen", "-u", "a"]).gateway == "http://gw:9000"
    # before or after the subcommand
    args = build_parser().parse_args(["--gateway", "http://a", "listen", "-u", "a"])
    assert args.gateway == "http://a"
    args = build_parser().parse_args(["listen", "-u", "a", "--gateway", "http://b"])
    assert args.gateway == "http://b"


def test_default_devices() -> None:
    assert default_device("listen").startswith("cli-")
    # a send never shares (and so never kicks) the listener's device
    assert default_device("send") != default_device("listen")


def test_event_json_shapes() -> None:
    message = wire_pb2.Message(
        msg_id=2**63 + 5,
        conversation_id="d:1:2",
        seq=4,
        sender_id=1,
        sender_device="web",
        content_type="text/plain",
        body="héllo".encode(),
        server_ts=123,
    )
    assert event_json(message) == {
        "msg_id": str(2**63 + 5),
        "conversation_id": "d:1:2",
        "seq": 4,
        "sender_id": 1,
        "sender_device": "web",
        "content_type": "text/plain",
        "text": "héllo",
        "server_ts": 123,
    }
    binary = wire_pb2.Message(content_type="image/png", body=b"\x89PNG")
    assert event_json(binary)["text"] is None
    receipt = wire_pb2.Receipt(conversation_id="g:1", reader_id=3, read_seq=9)
    assert event_json(receipt) == {
        "receipt": {"conversation_id": "g:1", "reader_id": 3, "read_seq": 9}
    }
    kick = wire_pb2.Kick(reason=wire_pb2.KICK_REASON_RECONNECT)
    assert event_json(kick) == {"kick": {"reason": "RECONNECT", "detail": ""}}
    json.dumps(event_json(message))


def test_client_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    # nothing listens on port 9 of localhost: the problem goes to stderr as JSON
    code = main(["--gateway", "http://127.0.0.1:9", "register", "alice", "-p", "pw"])
    assert code == 1
    problem = json.loads(capsys.readouterr().err)
    assert (problem["status"], problem["code"]) == (0, "unreachable")
