"""imctl register, send and listen: argument wiring."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest

from im.cli.main import build_parser
from im.cli.messaging import COUNT_TIMEOUT, listen_timeout
from tests.im.client.conftest import fake_im

if TYPE_CHECKING:
    from tests.im.client.conftest import FakeIm

__all__ = ["fake_im"]  # the fake gateway + connector of the client tests


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
    args = parser.parse_args(["chat", "-u", "bob", "-g", "12"])
    assert (args.to, args.conversation) == (None, "g:12")
    with pytest.raises(SystemExit):
        parser.parse_args(["chat", "-u", "bob"])


def test_listen_for_a_count_never_waits_forever() -> None:
    parser = build_parser()
    assert listen_timeout(parser.parse_args(["listen", "-u", "b"])) is None
    assert listen_timeout(parser.parse_args(["listen", "-u", "b", "-n", "1"])) == COUNT_TIMEOUT
    assert listen_timeout(parser.parse_args(["listen", "-u", "b", "-n", "1", "-t", "5"])) == 5
    assert listen_timeout(parser.parse_args(["listen", "-u", "b", "-n", "1", "-t", "0"])) is None
    assert listen_timeout(parser.parse_args(["listen", "-u", "b", "-t", "3"])) == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["listen", "-u", "b", "-n", "0"])


def test_send_help_tells_the_truth(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["send", "--help"])
    text = "".join(capsys.readouterr().out.split())
    assert "(--toUSER|--conversationID|--groupGROUP)" in text
    assert "default:cli-send-<host>-<pid>" in text and "cli-<hostname>" not in text


async def test_listen_gives_up_after_its_timeout_when_the_count_does_not_come(
    fake_im: FakeIm, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_im.add_user("bob", "pw")
    args = build_parser().parse_args(
        [
            "--gateway",
            fake_im.gateway_url,
            "listen",
            "-u",
            "bob",
            "-p",
            "pw",
            "-n",
            "1",
            "-t",
            "0.3",
        ]
    )
    assert await asyncio.to_thread(args.func, args) == 1
    problem = json.loads(capsys.readouterr().err)
    assert problem == {"error": "timeout", "detail": "0 of 1 messages in 0.3 s"}


def test_recall_and_edit_arguments() -> None:
    parser = build_parser()
    args = parser.parse_args(["recall", "-u", "alice", "-g", "7", "123"])
    assert (args.conversation, args.msg_id) == ("g:7", 123)
    args = parser.parse_args(["edit", "-u", "alice", "--to", "bob", "123", "new text"])
    assert (args.to, args.msg_id, args.text, args.client_msg_id) == ("bob", 123, "new text", None)
    args = parser.parse_args(["edit", "-u", "a", "-c", "d:1:2", "5", "--client-msg-id", "k"])
    assert (args.text, args.client_msg_id) == (None, "k")
    for bad in (["recall", "-u", "a", "-c", "d:1:2", "x1"], ["recall", "-u", "a", "5"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
