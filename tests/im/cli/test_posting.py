"""imctl post (REST) and service-send (the gateway's internal gRPC), against a real
gateway with real user and group services."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest

from im.cli.main import build_parser, main
from tests.services.gateway.test_messages_api import published

if TYPE_CHECKING:
    from tests.im.cli.conftest import Imctl
    from tests.services.gateway.conftest import Suite


def test_post_arguments() -> None:
    args = build_parser().parse_args(
        ["post", "-u", "alice", "-g", "7", "--client-msg-id", "k1", "hello"]
    )
    assert (args.conversation, args.client_msg_id, args.text) == ("g:7", "k1", "hello")
    args = build_parser().parse_args(["service-send", "--as", "42", "-c", "d:1:42", "hi"])
    assert (args.sender, args.conversation, args.grpc, args.device) == (42, "d:1:42", None, None)
    with pytest.raises(SystemExit):  # a conversation is required
        build_parser().parse_args(["service-send", "--as", "42", "hi"])


async def test_post_sends_over_rest_idempotently(suite: Suite, imctl: Imctl) -> None:
    alice = await suite.register("alice")
    await suite.register("bob")
    code, (first,) = await imctl("post", "--to", "bob", "--client-msg-id", "k1", "hi bob")
    assert code == 0, first
    assert first["client_msg_id"] == "k1" and first["conversation_id"].startswith("d:")
    code, (again,) = await imctl("post", "--to", "bob", "--client-msg-id", "k1", "hi bob")
    assert again == first
    (message,) = {m.msg_id: m for m in published(suite)}.values()
    assert (str(message.msg_id), message.sender_id, message.body) == (
        first["msg_id"],
        alice,
        b"hi bob",
    )


async def test_post_to_a_conversation_of_others_fails(suite: Suite, imctl: Imctl) -> None:
    await suite.register("alice")
    code, (problem,) = await imctl("post", "-g", "12345", "let me in")
    assert code == 1 and problem["status"] == 403 and problem["code"] == "forbidden"


async def test_service_send_as_a_member(
    suite: Suite, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = await suite.register("alice")
    bob = await suite.register("bob")
    cid = f"d:{min(alice, bob)}:{max(alice, bob)}"
    monkeypatch.setenv("IM_INTERNAL_INSECURE", "true")  # the harness runs gRPC without TLS
    grpc_addr = suite.gateway.endpoints()["grpc"]
    argv = ["service-send", "--grpc", grpc_addr, "--as", str(alice), "-c", cid, "-d", "bot"]
    code = await asyncio.to_thread(main, [*argv, "beep"])
    out = capsys.readouterr()
    assert code == 0, out.err
    sent = json.loads(out.out)
    (message,) = published(suite)
    assert (str(message.msg_id), message.sender_device) == (sent["msg_id"], "bot")

    carol = await suite.register("carol")
    argv[4] = str(carol)
    code = await asyncio.to_thread(main, [*argv, "beep"])
    problem = json.loads(capsys.readouterr().err)
    assert code == 1 and problem["error"] == "permission_denied"
