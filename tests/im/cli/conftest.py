"""Fixtures of the imctl tests: the real-gateway harness of the gateway's tests (user and
group services, a recording connector) and ``imctl``, which runs one command there."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest

from im.cli.main import main
from tests.services.gateway import conftest as gateway_harness

if TYPE_CHECKING:
    from tests.services.gateway.conftest import Suite

suite = gateway_harness.suite
settings_overrides = gateway_harness.settings_overrides

Imctl = Callable[..., Awaitable[tuple[int, list[dict]]]]


@pytest.fixture
def imctl(suite: Suite, capsys: pytest.CaptureFixture[str]) -> Imctl:
    """``await imctl("history", "--to", "bob", user="alice")``: exit status and the JSON
    lines it printed (stdout on success, stderr on failure)."""
    base = ["--gateway", str(suite.client.base_url)]

    async def run(*argv: str, user: str = "alice") -> tuple[int, list[dict]]:
        # Each command runs its own event loop (asyncio.run): give it a thread.
        code = await asyncio.to_thread(main, [*base, *argv, "-u", user, "-p", "secret-pass-1"])
        captured = capsys.readouterr()
        stream = captured.out if code == 0 else captured.err
        return code, [json.loads(line) for line in stream.splitlines() if line.strip()]

    return run
