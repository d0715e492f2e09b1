"""The terminal under ``imctl chat``: lines shown above a prompt, lines typed into it.

On a terminal, prompt_toolkit keeps the prompt and the half-typed line at the bottom
while incoming lines are printed above it (``patch_stdout``), with line editing and
history; the typed line is erased on Enter, because it comes back as a message with
its seq once the suite has it (so each line is shown once). When stdin is not a
terminal (a pipe, a file, a test), lines are read plainly and shown as printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Protocol, TextIO


class Screen(Protocol):
    def show(self, line: str) -> None:
        """Print ``line`` (above the prompt, if there is one)."""
        ...

    def lines(self) -> AsyncIterator[str]:
        """The lines typed, without their newline, until end of input."""
        ...

    def session(self) -> contextlib.AbstractContextManager[None]:
        """Where ``show`` may print while ``lines`` reads."""
        ...


class PlainScreen:
    """Lines from a pipe or file, output as printed (no prompt: nobody types)."""

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self._stdin = stdin or sys.stdin
        self._stdout = stdout or sys.stdout

    def show(self, line: str) -> None:
        print(line, file=self._stdout, flush=True)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        yield

    async def lines(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), self._stdin)
        except (ValueError, OSError):
            # not a pipe (e.g. a regular file): blocking reads never hang on a file
            while line := await asyncio.to_thread(self._stdin.readline):
                yield line.rstrip("\n")
            return
        while data := await reader.readline():
            yield data.decode("utf-8", errors="replace").rstrip("\n")


class PromptScreen:
    """A prompt_toolkit prompt at the bottom of a terminal."""

    def __init__(self, prompt: Callable[[], str] | str, **session_options: object) -> None:
        from prompt_toolkit import PromptSession

        self._session: PromptSession[str] = PromptSession(
            prompt,  # type: ignore[arg-type]
            erase_when_done=True,  # the line comes back as a message, with its seq
            **session_options,  # type: ignore[arg-type]
        )

    def show(self, line: str) -> None:
        print(line, flush=True)

    def on_edit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the line being typed changes (typing signals)."""

        def changed(buffer: object) -> None:
            if self._session.default_buffer.text:  # not the erase after Enter
                callback()

        self._session.default_buffer.on_text_changed += changed

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        from prompt_toolkit.patch_stdout import patch_stdout

        with patch_stdout(raw=True):
            yield

    async def lines(self) -> AsyncIterator[str]:
        while True:
            try:
                yield await self._session.prompt_async()
            except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C: leave
                return


def make_screen(prompt: Callable[[], str] | str) -> Screen:
    if sys.stdin.isatty() and sys.stdout.isatty():
        return PromptScreen(prompt)
    return PlainScreen()
