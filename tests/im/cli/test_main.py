"""imctl: the parser and its exit codes."""

from __future__ import annotations

import pytest

from im.cli.main import main


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "standalone" in capsys.readouterr().out
