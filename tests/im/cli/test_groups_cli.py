"""``imctl group ...``, ``imctl receipts`` and ``send --group``: argument wiring, and
one run of the commands against the real gateway harness."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest

from im.cli.groups import _split_members
from im.cli.main import build_parser, main
from tests.services.gateway import conftest as gateway_harness
from tests.services.gateway.helpers import message

if TYPE_CHECKING:
    from tests.services.gateway.conftest import Suite

# The real-gateway fixtures, offered to this module too.
suite = gateway_harness.suite
settings_overrides = gateway_harness.settings_overrides

ACCOUNT = ["--user", "alice", "--password", "pw"]


def parse(*argv: str) -> Any:
    return build_parser().parse_args(list(argv))


def test_group_create_arguments() -> None:
    args = parse("group", "create", *ACCOUNT, "team", "--members", "bob, 42,carol")
    assert (args.group_command, args.name, args.members, args.history_visible) == (
        "create",
        "team",
        "bob, 42,carol",
        False,
    )
    assert (args.user, args.password, args.device) == ("alice", "pw", None)
    assert callable(args.func)
    assert _split_members(args.members) == ["bob", "42", "carol"]
    assert _split_members("") == []
    args = parse("group", "create", "-u", "alice", "open", "--history-visible")
    assert (args.members, args.history_visible) == ("", True)
    with pytest.raises(SystemExit):  # a name is required
        parse("group", "create", *ACCOUNT)
    with pytest.raises(SystemExit):  # and an action
        parse("group", *ACCOUNT)


def test_group_member_commands() -> None:
    args = parse("group", "add", *ACCOUNT, "g:7", "bob", "12")
    assert (args.group_command, args.group, args.members) == ("add", "g:7", ["bob", "12"])
    args = parse("group", "remove", *ACCOUNT, "7", "bob")
    assert (args.group_command, args.group, args.members) == ("remove", "7", ["bob"])
    with pytest.raises(SystemExit):  # at least one member
        parse("group", "add", *ACCOUNT, "g:7")
    args = parse("group", "members", *ACCOUNT, "g:7")
    assert (args.group, args.page_size) == ("g:7", 1000)
    assert parse("group", "members", *ACCOUNT, "g:7", "--page-size", "5").page_size == 5
    with pytest.raises(SystemExit):
        parse("group", "members", *ACCOUNT, "g:7", "--page-size", "0")
    args = parse("group", "leave", *ACCOUNT, "g:7")
    assert (args.group_command, args.group) == ("leave", "g:7")
    args = parse("group", "info", *ACCOUNT, "g:7", "--gateway", "http://gw")
    assert (args.group_command, args.gateway) == ("info", "http://gw")
    args = parse("group", "role", *ACCOUNT, "g:7", "bob", "admin")
    assert (args.member, args.role) == ("bob", "admin")
    with pytest.raises(SystemExit):  # ownership is not transferable
        parse("group", "role", *ACCOUNT, "g:7", "bob", "owner")


def test_receipts_arguments() -> None:
    args = parse("receipts", *ACCOUNT, "--conversation", "d:1:2", "--seq", "4")
    assert (args.conversation, args.seq, args.list, args.limit, args.cursor) == (
        "d:1:2",
        4,
        "both",
        100,
        None,
    )
    args = parse("receipts", *ACCOUNT, "-g", "7", "-s", "1", "--list", "read", "--limit", "5")
    assert (args.conversation, args.list, args.limit) == ("g:7", "read", 5)
    for bad in [
        ["--seq", "1"],  # no conversation
        ["-c", "g:1"],  # no seq
        ["-c", "g:1", "--seq", "0"],
        ["-c", "g:1", "-g", "1", "--seq", "1"],
        ["-c", "g:1", "--seq", "1", "--list", "all"],
    ]:
        with pytest.raises(SystemExit):
            parse("receipts", *ACCOUNT, *bad)


def test_send_to_a_group() -> None:
    # A group's conversation id is its id: --group only fills in --conversation.
    assert parse("send", *ACCOUNT, "--group", "7", "hi").conversation == "g:7"
    args = parse("send", *ACCOUNT, "-g", "g:9", "hi")
    assert (args.conversation, args.to, args.text) == ("g:9", None, "hi")
    with pytest.raises(SystemExit):  # still exactly one target
        parse("send", *ACCOUNT, "--group", "7", "--to", "bob", "hi")
    with pytest.raises(SystemExit):
        parse("send", *ACCOUNT, "--group", "7", "-c", "g:7", "hi")


def test_help_lists_the_new_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "group" in out and "receipts" in out


async def test_commands_against_a_real_gateway(
    suite: Suite, capsys: pytest.CaptureFixture[str]
) -> None:
    alice_id = await suite.register("alice")
    bob_id = await suite.register("bob")
    carol_id = await suite.register("carol")
    base = ["--gateway", str(suite.client.base_url)]

    async def imctl(*argv: str, user: str = "alice") -> tuple[int, list[dict]]:
        # Each command runs its own event loop (asyncio.run): give it a thread.
        code = await asyncio.to_thread(main, [*base, *argv, "-u", user, "-p", "secret-pass-1"])
        captured = capsys.readouterr()
        stream = captured.out if code == 0 else captured.err
        return code, [json.loads(line) for line in stream.splitlines() if line.strip()]

    code, [group] = await imctl("group", "create", "team", "--members", "bob")
    assert code == 0 and (group["my_role"], group["member_count"]) == ("owner", 2)
    gid = group["conversation_id"]
    digits = gid[2:]

    code, lines = await imctl("group", "add", digits, "carol", str(bob_id))
    assert code == 0 and lines == [{"conversation_id": gid, "added": [carol_id]}]
    code, lines = await imctl("group", "members", gid, "--page-size", "2")
    assert code == 0
    assert [(m["user_id"], m["username"], m["role"]) for m in lines] == [
        (alice_id, "alice", "owner"),
        (bob_id, "bob", "member"),
        (carol_id, "carol", "member"),
    ]
    code, [member] = await imctl("group", "role", gid, "bob", "admin")
    assert code == 0 and member["role"] == "admin"
    code, [info] = await imctl("group", "info", gid, user="bob")
    assert code == 0 and info["my_role"] == "admin"

    await suite.store.insert_many([message(gid, 1, alice_id)])
    carol = {"Authorization": f"Bearer {(await suite.login('carol'))['access_token']}"}
    r = await suite.client.post(f"/v1/conversations/{gid}/read", json={"seq": 1}, headers=carol)
    assert r.status_code == 204
    code, [receipts] = await imctl("receipts", "--group", digits, "--seq", "1")
    assert code == 0
    assert (receipts["read_count"], receipts["unread_count"]) == (1, 1)
    assert receipts["read_by"]["user_ids"] == [carol_id]

    code, lines = await imctl("group", "remove", gid, "carol")
    assert code == 0 and lines == [{"conversation_id": gid, "removed": carol_id}]
    code, lines = await imctl("group", "leave", gid, user="bob")
    assert code == 0 and lines == [{"conversation_id": gid, "left": True}]

    # Problems go to stderr as JSON, with exit status 1.
    code, [problem] = await imctl("group", "leave", gid)
    assert code == 1 and (problem["status"], problem["code"]) == (409, "owner_cannot_leave")
    code, [problem] = await imctl("group", "create", "x", "--members", "nobody-here")
    assert code == 1 and (problem["status"], problem["code"]) == (404, "not_found")
