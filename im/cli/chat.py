"""``imctl chat``: an interactive chat in the terminal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from im.cli.common import default_device, make_client, password, print_problem, run_client
from im.client.errors import ClientError, kick_reason_name
from im.v1 import wire_pb2


async def _stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError):
        # not a pipe/tty (e.g. a regular file): plain blocking reads never hang on a file
        while line := await asyncio.to_thread(sys.stdin.readline):
            yield line
        return
    while line_bytes := await reader.readline():
        yield line_bytes.decode("utf-8", errors="replace")


async def _chat(args: argparse.Namespace) -> int:
    async with make_client(args) as client:
        await client.login(args.user, password(args), args.device or default_device("chat"))
        await client.connect()
        me = client.user_id
        cid = await client.direct_conversation_with(args.to)
        names: dict[int, str] = {me: args.user}

        async def name_of(user_id: int) -> str:
            if user_id not in names:
                try:
                    names[user_id] = (await client.gateway.user(user_id))["username"]
                except ClientError:
                    names[user_id] = str(user_id)
            return names[user_id]

        async def show() -> None:
            async for event in client.events():
                if isinstance(event, wire_pb2.Message):
                    text = event.body.decode("utf-8", errors="replace")
                    where = "" if event.conversation_id == cid else f"[{event.conversation_id}] "
                    print(f"{where}{await name_of(event.sender_id)}: {text}", flush=True)
                    if event.sender_id != me:
                        with contextlib.suppress(ClientError):
                            await client.read(event.conversation_id, event.seq)
                elif isinstance(event, wire_pb2.Receipt):
                    if event.reader_id != me:
                        who = await name_of(event.reader_id)
                        print(f"  ({who} read up to #{event.read_seq})", flush=True)
                elif isinstance(event, wire_pb2.Kick):
                    print(f"  (kicked: {kick_reason_name(event.reason)})", flush=True)

        async def type_lines() -> None:
            async for line in _stdin_lines():
                text = line.rstrip("\n")
                if text in ("/quit", "/exit"):
                    return
                if text:
                    try:
                        await client.send(cid, text)
                    except ClientError as exc:
                        print_problem(exc.to_dict())

        print(f"chatting with {args.to} in {cid}; /quit or end of input to leave", flush=True)
        shower = asyncio.create_task(show())
        typer = asyncio.create_task(type_lines())
        done, pending = await asyncio.wait({shower, typer}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in done:
            task.result()
        if shower in done:
            print_problem({"error": "closed", "detail": client.close_reason or "closed"})
            return 1
    return 0


def register(sub: argparse._SubParsersAction, account: argparse.ArgumentParser) -> None:
    p = sub.add_parser("chat", parents=[account], help="interactive 1:1 chat")
    p.add_argument("--to", required=True, help="peer username or user id")
    p.set_defaults(func=run_client(_chat))
