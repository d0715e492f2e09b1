"""imctl against a real standalone suite, as the README uses it: a chat survives a
restart of the suite, and neither a listen nor a failed chat kicks a running chat."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from im.client import ImClient
from tests.e2e.harness import IMCTL, RunningSuite, restart_suite, start_suite, stop_suite
from tests.e2e.helpers import PASSWORD, new_user, take_messages

pytestmark = pytest.mark.e2e

LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] #(\d+) (\S+): (.*)$")


class Running:
    """An imctl command in a child process, its stdin a pipe we write lines into."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[str] = []

    async def expect(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Read output lines until one matches ``pattern``."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError(f"ended before {pattern!r}:\n" + "\n".join(self.seen))
                line = raw.decode().rstrip("\n")
                self.seen.append(line)
                if found := re.search(pattern, line):
                    return found

    async def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def end(self, timeout: float = 30.0) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()  # end of input: the chat leaves
        rest, _ = await asyncio.wait_for(self.process.communicate(), timeout)
        self.seen += rest.decode().splitlines()
        return self.process.returncode or 0


@contextlib.asynccontextmanager
async def imctl(gateway: str, *argv: str) -> AsyncIterator[Running]:
    process = await asyncio.create_subprocess_exec(
        str(IMCTL),
        "--gateway",
        gateway,
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield Running(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def chat(
    gateway: str, client: ImClient, peer: ImClient
) -> contextlib.AbstractAsyncContextManager[Running]:
    me, them = client.username, peer.username  # type: ignore[attr-defined]
    return imctl(gateway, "chat", "-u", me, "-p", PASSWORD, "--to", them)


async def test_a_chat_survives_a_restart_of_the_suite(tmp_path: Path) -> None:
    suite = start_suite(tmp_path / "suite")
    try:
        alice = await new_user(suite.gateway, "alice")
        bob = await new_user(suite.gateway, "bob")
        await alice.connect()
        await alice.send_to_user(bob.username, "before")  # type: ignore[attr-defined]
        async with chat(suite.gateway, bob, alice) as bobs:
            await bobs.expect(r"#1 alice_\w+: before$")  # the history on opening
            await bobs.expect(r"^\(Enter sends")
            await alice.close()

            stop_suite(suite)
            await bobs.expect(r"\(offline: .*; reconnecting in")
            suite = await asyncio.to_thread(restart_suite, suite)
            await bobs.expect(r"\(reconnected\)", timeout=60)

            back = ImClient(suite.gateway)
            await back.login(alice.username, PASSWORD, "dev1")  # type: ignore[attr-defined]
            await back.connect()
            await back.send_to_user(bob.username, "after the restart")  # type: ignore[attr-defined]
            found = await bobs.expect(r"#2 (\S+): after the restart$")
            assert found.group(1) == alice.username  # type: ignore[attr-defined]

            await bobs.type("and bob answers")
            own, answer = await take_messages(back, 2)  # the sender's devices get it too
            assert (own.seq, answer.seq, answer.body) == (2, 3, b"and bob answers")
            await bobs.expect(r"#3 bob_\w+: and bob answers$")  # his own line, once
            assert await bobs.end() == 0
            await back.close()
        own = [line for line in bobs.seen if "and bob answers" in line]
        assert len(own) == 1, bobs.seen
    finally:
        stop_suite(suite)


async def test_neither_a_listen_nor_a_failed_chat_kicks_a_running_chat(
    suite: RunningSuite,
) -> None:
    alice = await new_user(suite.gateway, "alice")
    bob = await new_user(suite.gateway, "bob")
    async with chat(suite.gateway, bob, alice) as bobs:
        await bobs.expect(r"^\(Enter sends")
        listening = ["listen", "-u", bob.username, "-p", PASSWORD, "-n", "1", "-t", "60"]  # type: ignore[attr-defined]
        async with imctl(suite.gateway, *listening) as listen:
            await alice.connect()
            # Every device gets what arrives once it is connected: send until the
            # listen (a process starting up) has one.
            for attempt in range(120):
                await alice.send_to_user(bob.username, f"to both {attempt}")  # type: ignore[attr-defined]
                with contextlib.suppress(TimeoutError):
                    found = await listen.expect(r'"text": "(to both \d+)"', timeout=0.5)
                    break
            else:
                raise AssertionError("listen got nothing")
            assert await listen.end() == 0
        await bobs.expect(rf"#\d+ alice_\w+: {found.group(1)}$")

        mistyped = ["chat", "-u", bob.username, "-p", PASSWORD, "--to", "nobody-such"]  # type: ignore[attr-defined]
        async with imctl(suite.gateway, *mistyped) as failed:
            assert await failed.end() == 1
            assert '"no user named' in failed.seen[-1]

        await alice.send_to_user(bob.username, "still there?")  # type: ignore[attr-defined]
        await bobs.expect(r"#\d+ alice_\w+: still there\?$")
        assert await bobs.end() == 0
    assert not any("kicked" in line for line in bobs.seen), bobs.seen
    await alice.close()
    await bob.close()


async def test_listen_says_what_a_group_event_was(suite: RunningSuite) -> None:
    alice = await new_user(suite.gateway, "alice")
    bob = await new_user(suite.gateway, "bob")
    try:
        group = await alice.gateway.create_group("team", [bob.user_id])
        await alice.gateway.rename_group(group["conversation_id"], "crew")
        listening = ["listen", "-u", bob.username, "-p", PASSWORD, "-n", "1", "-t", "60"]  # type: ignore[attr-defined]
        async with imctl(suite.gateway, *listening) as listen:
            found = await listen.expect(r'"event": "(.*)"')
            assert await listen.end() == 0
        assert found.group(1) == f'{alice.username} renamed the group to \\"crew\\"'  # type: ignore[attr-defined]
    finally:
        await alice.close()
        await bob.close()
