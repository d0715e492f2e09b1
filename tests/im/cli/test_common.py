"""What every imctl client command shares: options, devices, output shapes."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from im.cli.common import (
    DEFAULT_GATEWAY,
    UsageError,
    check_not_self,
    clock_time,
    default_device,
    event_json,
)
from im.cli.main import build_parser, main
from im.client.reconnect import Reconnected, Reconnecting
from im.v1 import wire_pb2
from services.gateway.models import DEVICE_ID_PATTERN

DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


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


def test_no_two_commands_share_a_default_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """A login ends the previous session of its device: a listen must not kick a chat,
    nor a chat with carol (or a mistyped name) the chat with bob."""
    monkeypatch.setattr("socket.gethostname", lambda: "vm-7.example.org")
    monkeypatch.setattr("os.getpid", lambda: 4242)
    assert default_device("chat", "bob") == "cli-chat-vm-7-bob"
    assert default_device("chat", "g:12") == "cli-chat-vm-7-g:12"
    assert default_device("listen") == "cli-listen-vm-7"
    assert default_device("send") == "cli-send-vm-7-4242"
    assert default_device("group") == "cli-group-vm-7-4242"
    devices = {
        default_device("chat", "bob"),
        default_device("chat", "bobb"),
        default_device("listen"),
        default_device("send"),
        default_device("history"),
    }
    assert len(devices) == 5


def test_default_devices_are_valid_device_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "my laptop (home)" + "x" * 80)
    for device in (default_device("chat", "a" * 40), default_device("send")):
        assert DEVICE_ID.fullmatch(device), device


def test_a_chat_or_send_with_oneself_is_refused_before_logging_in() -> None:
    args = build_parser().parse_args(["chat", "-u", "alice", "-p", "pw", "--to", "alice"])
    with pytest.raises(UsageError, match="a direct conversation needs two different users"):
        check_not_self(args)
    check_not_self(build_parser().parse_args(["chat", "-u", "alice", "--to", "bob"]))


def test_exactly_one_target_is_shown_as_required_in_the_usage() -> None:
    parser = build_parser()
    for command in ("send", "chat", "history", "read"):
        usage = parser._subparsers._group_actions[0].choices[command].format_usage()  # type: ignore[union-attr]
        assert "(--to USER | --conversation ID | --group GROUP)" in " ".join(usage.split())
        args = parser.parse_args([command, "-u", "a", "-g", "7"])
        assert (args.to, args.conversation) == (None, "g:7")


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
    assert event_json(Reconnecting("kicked: RECONNECT", 1, 0.5)) == {
        "reconnecting": {"reason": "kicked: RECONNECT", "attempt": 1, "delay": 0.5}
    }
    assert event_json(Reconnected("c-1", 2)) == {
        "reconnected": {"connector_id": "c-1", "attempts": 2}
    }
    json.dumps(event_json(message))


def test_client_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    # nothing listens on port 9 of localhost: the problem goes to stderr as JSON
    code = main(["--gateway", "http://127.0.0.1:9", "register", "alice", "-p", "pw"])
    assert code == 1
    problem = json.loads(capsys.readouterr().err)
    assert (problem["status"], problem["code"]) == (0, "unreachable")


def test_clock_time_shows_the_date_only_for_another_day() -> None:
    noon = datetime(2026, 12, 3, 12, 0, 5)
    ts = int(noon.timestamp() * 1000)
    assert clock_time(ts, now=noon) == "12:00:05"
    assert clock_time(ts, now=datetime(2026, 12, 4, 9, 0)) == "2026-12-03 12:00"


def test_typing_presence_and_refusals_as_json() -> None:
    from im.cli.common import event_json
    from im.v1 import wire_pb2

    typing = wire_pb2.Typing(
        conversation_id="d:1:2", user_id=1, state=wire_pb2.TYPING_STATE_STARTED, expires_in_ms=6000
    )
    assert event_json(typing) == {
        "typing": {
            "conversation_id": "d:1:2",
            "user_id": 1,
            "state": "started",
            "expires_in_ms": 6000,
        }
    }
    assert event_json(wire_pb2.Presence(user_id=2, online=True)) == {
        "presence": {"user_id": 2, "online": True, "last_seen_ms": None}
    }
    refused = wire_pb2.Error(code=wire_pb2.ERROR_CODE_FORBIDDEN, message="no")
    assert event_json(refused) == {"error": {"code": "FORBIDDEN", "message": "no"}}
