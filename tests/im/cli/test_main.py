"""imctl: the parser, its help texts and exit codes."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from typing import Any

import pytest

from im.cli.main import build_parser, main, package_version


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "standalone" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"imctl {package_version()}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", package_version())


def parsers(parser: argparse.ArgumentParser, path: str = "imctl") -> Iterator[tuple[str, Any]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{path} {name}")


def test_every_command_has_help_without_issue_numbers() -> None:
    for path, parser in parsers(build_parser()):
        text = parser.format_help()
        assert not re.search(r"issue\s*#?\d|#\d+\)", text, re.IGNORECASE), path


@pytest.mark.parametrize("command", ["standalone", "serve", "config-doc", "cluster", "db"])
def test_server_commands_say_what_they_do(command: str) -> None:
    sub = dict(parsers(build_parser()))[f"imctl {command}"]
    assert sub.description and len(sub.description) > 20, command
