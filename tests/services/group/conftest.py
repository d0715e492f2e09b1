"""Fixtures: a group service on SQLite in a temp folder, and a stub to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from im.config import Settings
from tests.services.group.helpers import Stub, make_settings, running_group_service


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, max_group_size=50)


@pytest.fixture
async def groups(settings: Settings) -> AsyncIterator[Stub]:
    async with running_group_service(settings) as stub:
        yield stub
