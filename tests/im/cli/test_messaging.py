"""imctl register, send and listen: argument wiring."""

from __future__ import annotations

import pytest

from im.cli.main import build_parser


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
