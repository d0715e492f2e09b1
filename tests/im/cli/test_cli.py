"""imctl argument wiring and output shapes (no servers needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from im.cli.main import (
    DEFAULT_GATEWAY,
    build_parser,
    cmd_cluster,
    cmd_config_doc,
    cmd_db_upgrade,
    cmd_serve,
    cmd_standalone,
    default_device,
    event_json,
    main,
)
from im.v1 import wire_pb2


def test_config_doc_prints_the_settings_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-doc"]) == 0
    out = capsys.readouterr().out
    assert "IM_BUS_URL" in out and out.startswith("| variable |")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "standalone" in capsys.readouterr().out


def test_server_commands() -> None:
    parser = build_parser()
    assert parser.parse_args(["standalone"]).func is cmd_standalone
    args = parser.parse_args(["serve", "connector"])
    assert (args.func, args.service) == (cmd_serve, "connector")
    assert parser.parse_args(["config-doc"]).func is cmd_config_doc
    assert parser.parse_args(["db", "upgrade"]).func is cmd_db_upgrade
    args = parser.parse_args(["cluster", "--connectors", "3"])
    assert (args.func, args.connectors, args.routers) == (cmd_cluster, 3, 2)
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "nonsense"])


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


def test_send_arguments() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["send", "--user", "alice", "--password", "pw", "--to", "bob", "--transport", "ws", "hi"]
    )
    assert (args.user, args.password, args.to, args.conversation) == ("alice", "pw", "bob", None)
    assert (args.transport, args.text, args.device, args.content_type) == (
        "ws",
        "hi",
        None,
        "text/plain",
    )
    args = parser.parse_args(["send", "-u", "alice", "-c", "g:7", "-d", "dev1", "yo"])
    assert (args.conversation, args.device, args.transport) == ("g:7", "dev1", "tcp")
    with pytest.raises(SystemExit):  # a target is required
        parser.parse_args(["send", "-u", "alice", "hi"])
    with pytest.raises(SystemExit):  # but only one
        parser.parse_args(["send", "-u", "alice", "--to", "bob", "-c", "g:1", "hi"])


def test_listen_and_chat_arguments() -> None:
    parser = build_parser()
    args = parser.parse_args(["listen", "-u", "bob", "--count", "5", "--timeout", "2.5"])
    assert (args.count, args.timeout, args.transport) == (5, 2.5, "tcp")
    args = parser.parse_args(["listen", "-u", "bob"])
    assert (args.count, args.timeout) == (0, None)
    args = parser.parse_args(["chat", "-u", "bob", "--to", "alice"])
    assert args.to == "alice"
    with pytest.raises(SystemExit):
        parser.parse_args(["chat", "-u", "bob"])


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


def test_db_upgrade_creates_the_sqlite_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("IM_DATABASE_URL", raising=False)
    assert main(["db", "upgrade"]) == 0
    assert (tmp_path / "im.db").exists()
