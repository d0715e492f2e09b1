"""``imctl group rename|describe|avatar|transfer|dissolve|join|invite-link|requests``:
argument wiring, and a run against the real gateway harness."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest

from im.cli.group_lifecycle import duration
from im.cli.main import build_parser, main
from tests.services.gateway import conftest as gateway_harness

if TYPE_CHECKING:
    from tests.services.gateway.conftest import Suite

suite = gateway_harness.suite
settings_overrides = gateway_harness.settings_overrides

ACCOUNT = ["--user", "alice", "--password", "pw"]


def parse(*argv: str) -> Any:
    return build_parser().parse_args(list(argv))


def test_lifecycle_arguments() -> None:
    assert parse("group", "rename", *ACCOUNT, "g:7", "crew").name == "crew"
    assert parse("group", "describe", *ACCOUNT, "7", "we row").text == "we row"
    assert parse("group", "avatar", *ACCOUNT, "7", "https://x/y.png").avatar == "https://x/y.png"
    assert parse("group", "transfer", *ACCOUNT, "7", "bob").member == "bob"
    assert parse("group", "dissolve", *ACCOUNT, "7").group == "7"
    assert parse("group", "join", *ACCOUNT, "tok").token == "tok"
    args = parse("group", "invite-link", "create", *ACCOUNT, "7", "--expires", "12h")
    assert (args.expires, args.max_uses, args.approval_required) == (43200, 0, False)
    args = parse(
        "group", "invite-link", "create", *ACCOUNT, "7", "--max-uses", "3", "--approval-required"
    )
    assert (args.expires, args.max_uses, args.approval_required) == (7 * 86400, 3, True)
    assert parse("group", "invite-link", "revoke", *ACCOUNT, "7", "abc").link_id == "abc"
    assert parse("group", "requests", "approve", *ACCOUNT, "7", "bob").member == "bob"
    for bad in (["invite-link", *ACCOUNT], ["requests", "approve", *ACCOUNT, "7"], ["join"]):
        with pytest.raises(SystemExit):
            parse("group", *bad)


def test_durations() -> None:
    assert [duration(t) for t in ("90", "90s", "30m", "2h", "7d")] == [90, 90, 1800, 7200, 604800]
    with pytest.raises(argparse.ArgumentTypeError):
        duration("a week")


async def test_lifecycle_commands_against_a_real_gateway(
    suite: Suite, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("alice", "bob", "carol", "dave"):
        await suite.register(name)
    base = ["--gateway", str(suite.client.base_url)]

    async def imctl(*argv: str, user: str = "alice") -> tuple[int, list[dict]]:
        code = await asyncio.to_thread(main, [*base, *argv, "-u", user, "-p", "secret-pass-1"])
        captured = capsys.readouterr()
        stream = captured.out if code == 0 else captured.err
        return code, [json.loads(line) for line in stream.splitlines() if line.strip()]

    code, [group] = await imctl("group", "create", "team", "--members", "bob")
    gid = group["conversation_id"]
    code, [renamed] = await imctl("group", "rename", gid, "crew")
    assert code == 0 and renamed["name"] == "crew"
    code, [described] = await imctl("group", "describe", gid, "we row", user="alice")
    assert described["description"] == "we row"
    code, [problem] = await imctl("group", "avatar", gid, "ftp://x", user="alice")
    assert code == 1 and problem["status"] == 422

    code, [link] = await imctl("group", "invite-link", "create", gid, "--max-uses", "1")
    assert code == 0 and link["token"]
    code, [joined] = await imctl("group", "join", link["token"], user="carol")
    assert joined == {"conversation_id": gid, "name": "crew", "status": "joined"}
    code, [listed] = await imctl("group", "invite-link", "list", gid)
    assert listed["uses"] == 1 and listed["token"] is None
    code, [revoked] = await imctl("group", "invite-link", "revoke", gid, link["link_id"])
    assert revoked["revoked"]

    code, [gated] = await imctl("group", "invite-link", "create", gid, "--approval-required")
    code, [asked] = await imctl("group", "join", gated["token"], user="dave")
    assert asked["status"] == "pending"
    code, [pending] = await imctl("group", "requests", "list", gid)
    assert code == 0 and pending["link_id"] == gated["link_id"]
    code, [decided] = await imctl("group", "requests", "approve", gid, "dave")
    assert code == 0 and decided["joined"] is True

    code, [moved] = await imctl("group", "transfer", gid, "bob")
    assert code == 0 and moved["my_role"] == "admin"
    code, [problem] = await imctl("group", "dissolve", gid)
    assert code == 1 and problem["status"] == 403  # alice is no longer the owner
    code, [dissolved] = await imctl("group", "dissolve", gid, user="bob")
    assert code == 0 and dissolved["dissolved"] is True
