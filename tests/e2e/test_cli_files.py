"""``imctl send-file`` and ``imctl download`` against the session's standalone suite:
the recipient downloads the bytes the sender sent; a stranger is told it does not
exist."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from tests.e2e.harness import IMCTL, RunningSuite
from tests.e2e.helpers import PASSWORD, new_user

pytestmark = pytest.mark.e2e


async def imctl(gateway: str, *argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(IMCTL),
        "--gateway",
        gateway,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_send_file_then_download(suite: RunningSuite, tmp_path: Path) -> None:
    alice = await new_user(suite.gateway, "alice")
    bob = await new_user(suite.gateway, "bob")
    carol = await new_user(suite.gateway, "carol")
    data = os.urandom(300_000)
    source = tmp_path / "report.pdf"
    source.write_bytes(data)
    as_alice = ["-u", alice.username, "-p", PASSWORD]  # type: ignore[attr-defined]
    code, out, err = await imctl(
        suite.gateway,
        "send-file",
        *as_alice,
        "--to",
        bob.username,
        str(source),
        "-m",
        "here",  # type: ignore[attr-defined]
    )
    assert code == 0, err
    sent = json.loads(out)
    attachment_id = sent["attachment"]["attachment_id"]
    assert sent["attachment"]["content_type"] == "application/pdf"

    folder = tmp_path / "bob"
    folder.mkdir()
    as_bob = ["-u", bob.username, "-p", PASSWORD]  # type: ignore[attr-defined]
    code, out, err = await imctl(suite.gateway, "download", *as_bob, attachment_id, str(folder))
    assert code == 0, err
    assert json.loads(out)["size"] == len(data)
    assert (folder / "report.pdf").read_bytes() == data
    # Again into the same place: refused without --force.
    code, _, err = await imctl(suite.gateway, "download", *as_bob, attachment_id, str(folder))
    assert code == 1 and "exists" in err

    as_carol = ["-u", carol.username, "-p", PASSWORD]  # type: ignore[attr-defined]
    code, _, err = await imctl(suite.gateway, "download", *as_carol, attachment_id, str(folder))
    assert code == 1 and json.loads(err)["status"] == 404
    for client in (alice, bob, carol):
        await client.close()
