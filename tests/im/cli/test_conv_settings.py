"""imctl conv-settings against the real gateway harness."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import pytest

from im.cli.conv_settings import mute_seconds

if TYPE_CHECKING:
    from tests.im.cli.conftest import Imctl
    from tests.services.gateway.conftest import Suite


async def test_mute_pin_rename_and_the_list(suite: Suite, imctl: Imctl) -> None:
    await suite.register("alice")
    await suite.register("bob")
    code, [group] = await imctl("group", "create", "team", "--members", "bob")
    gid = group["conversation_id"]
    code, [got] = await imctl("conv-settings", "-g", gid, "--mute", "forever", "--pin")
    assert code == 0
    assert (got["conversation_id"], got["muted"], got["muted_until"], got["pinned"]) == (
        gid,
        True,
        -1,
        True,
    )
    code, [got] = await imctl("conv-settings", "-g", gid, "--mute", "8h", "--name", "Work")
    assert code == 0 and got["muted"] and got["muted_until"] > 0 and got["name"] == "Work"
    code, [got] = await imctl("conv-settings", "-g", gid, "--unmute", "--unpin", "--archive")
    assert code == 0 and (got["muted"], got["pinned"], got["archived"]) == (False, False, True)
    code, listed = await imctl("conversations")
    assert code == 0 and listed[0]["settings"]["name"] == "Work"
    assert listed[0]["title"] == "Work"  # the user's own name for it, not "team"

    code, [problem] = await imctl("conv-settings", "-g", gid)
    assert code == 1 and problem["error"] == "usage"
    code, [problem] = await imctl("conv-settings", "-g", gid, "--name", "x" * 65)
    assert code == 1 and problem["status"] == 422
    code, [theirs] = await imctl("conv-settings", "-g", gid, "--pin", user="bob")
    assert code == 0 and theirs["pinned"] and theirs["name"] == ""  # bob's own settings


def test_mute_durations() -> None:
    assert mute_seconds("90s") == 90
    assert mute_seconds("30m") == 1800
    assert mute_seconds("2w") == 14 * 86400
    assert mute_seconds("forever") is None
    for bad in ("0h", "5y", "h", "-1d"):
        with pytest.raises(argparse.ArgumentTypeError):
            mute_seconds(bad)
