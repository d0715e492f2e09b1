"""Graceful-stop steps are bounded: a hung or failing backend never keeps a process
from exiting. Start-up logging leaves out the libraries' chatter unless verbose."""

from __future__ import annotations

import asyncio
import logging

import pytest

from im.runtime import bounded, quiet_libraries


async def test_a_hung_step_is_abandoned_after_its_bound(caplog: pytest.LogCaptureFixture) -> None:
    never = asyncio.Event()
    await asyncio.wait_for(bounded("leaving the registry", never.wait(), 0.05), 5)
    assert "leaving the registry took over" in caplog.text


async def test_a_failing_step_is_logged_and_the_stop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail() -> None:
        raise ConnectionError("broker gone")

    await bounded("flushing acks", fail(), 1)
    assert "flushing acks failed" in caplog.text


@pytest.mark.parametrize(("level", "alembic"), [("INFO", logging.WARNING), ("debug", 0)])
def test_alembic_speaks_at_start_up_only_when_verbose(level: str, alembic: int) -> None:
    logger = logging.getLogger("alembic")
    before = logger.level
    try:
        quiet_libraries(level)
        assert logger.level == alembic
    finally:
        logger.setLevel(before)
