"""The chat's terminal: a prompt_toolkit prompt (fed through a pipe input here) or plain
lines from a pipe or file."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from im.cli.screen import PlainScreen, PromptScreen


async def test_the_prompt_gives_typed_lines_until_ctrl_d() -> None:
    with create_pipe_input() as keys, create_app_session(input=keys, output=DummyOutput()):
        screen = PromptScreen("alice> ")
        got: list[str] = []

        async def read() -> None:
            async for line in screen.lines():
                got.append(line)

        with screen.session():
            reading = asyncio.create_task(read())
            keys.send_text("hello there\r")
            keys.send_text("second\r")
            screen.show("[09:30:15] #3 bob: hi")  # printed above the prompt meanwhile
            keys.send_text("\x04")  # Ctrl-D on an empty line: leave
            await asyncio.wait_for(reading, 5)
    assert got == ["hello there", "second"]


async def test_plain_lines_from_a_file(tmp_path: Path) -> None:
    typed = tmp_path / "typed.txt"
    typed.write_text("one\ntwo\n\nthree")
    out = io.StringIO()
    with typed.open() as stdin:
        screen = PlainScreen(stdin, out)
        lines = [line async for line in screen.lines()]
    screen.show("shown")
    assert lines == ["one", "two", "", "three"]
    assert out.getvalue() == "shown\n"


async def test_plain_lines_from_a_pipe() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, "héllo\nworld\n".encode())
    os.close(write_end)
    with os.fdopen(read_end) as stdin:
        lines = [line async for line in PlainScreen(stdin, io.StringIO()).lines()]
    assert lines == ["héllo", "world"]
