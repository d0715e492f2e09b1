"""``imctl``: run the suite (standalone or one service) and talk to it from a shell.

Client commands print JSON lines on stdout (one per result/message) and problems as a
JSON object on stderr with exit status 1, so they compose with ``jq`` and scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from im.client.errors import ClientError, kick_reason_name
from im.v1 import wire_pb2

SERVICES = ("gateway", "user", "group", "connector", "router")
DEFAULT_GATEWAY = "http://127.0.0.1:8080"


def default_device(command: str) -> str:
    """``cli-<host>`` for listen/chat; send gets its own per-process device so it never
    kicks a listener (or another send) of the same user off the same host."""
    host = socket.gethostname().split(".")[0] or "host"
    if command == "send":
        return f"cli-{host}-send-{os.getpid()}"
    return f"cli-{host}"


# ------------------------------------------------------------------- output


def message_json(message: wire_pb2.Message) -> dict[str, Any]:
    text: str | None = None
    if message.content_type.startswith("text/"):
        text = message.body.decode("utf-8", errors="replace")
    return {
        "msg_id": str(message.msg_id),  # 64-bit: a string, as on the REST API
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "sender_id": message.sender_id,
        "sender_device": message.sender_device,
        "content_type": message.content_type,
        "text": text,
        "server_ts": message.server_ts,
    }


def event_json(event: object) -> dict[str, Any]:
    if isinstance(event, wire_pb2.Message):
        return message_json(event)
    if isinstance(event, wire_pb2.Receipt):
        return {
            "receipt": {
                "conversation_id": event.conversation_id,
                "reader_id": event.reader_id,
                "read_seq": event.read_seq,
            }
        }
    if isinstance(event, wire_pb2.Kick):
        return {"kick": {"reason": kick_reason_name(event.reason), "detail": event.detail}}
    return {"event": str(event)}


def _print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, ensure_ascii=False), flush=True)


def _print_problem(data: dict[str, Any]) -> None:
    print(json.dumps(data, ensure_ascii=False), file=sys.stderr, flush=True)


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return args.password
    env = os.environ.get("IM_PASSWORD")
    if env:
        return env
    return getpass.getpass(f"password for {args.user}: ")


def _run_client(coro_fn: Callable[[argparse.Namespace], Awaitable[int]]) -> Callable[..., int]:
    """Run an async client command; ClientError and socket errors become exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(coro_fn(args))  # type: ignore[arg-type]
        except ClientError as exc:
            problem = exc.to_dict()
            if problem.get("retry_after") is not None:
                problem["hint"] = f"retry after {problem['retry_after']:g} s"
            _print_problem(problem)
        except (OSError, TimeoutError) as exc:
            _print_problem({"error": type(exc).__name__, "detail": str(exc) or repr(exc)})
        return 1

    return run


# ------------------------------------------------------------------ servers


def cmd_standalone(args: argparse.Namespace) -> int:
    from im.config import Settings
    from im.runtime import install_uvloop, setup_logging

    settings = Settings()
    setup_logging(settings, "standalone")
    install_uvloop()
    from im.standalone import run_standalone

    asyncio.run(run_standalone(settings))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from im.config import Settings
    from im.runtime import install_uvloop, setup_logging

    settings = Settings()
    setup_logging(settings, args.service)
    install_uvloop()
    from im.standalone import serve_one

    asyncio.run(serve_one(args.service, settings))
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Create/upgrade the SQL schema (for deployments with IM_AUTO_MIGRATE=false)."""
    from im.config import Settings
    from im.db import create_schema, make_engine

    settings = Settings()
    url = settings.resolved_database_url()
    engine = make_engine(url)
    try:
        revision = create_schema(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    print(f"schema at revision {revision}: {where}")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    """Every service its own process on the real servers (scripts/dev-services.sh up)."""
    from pathlib import Path

    from im.cluster import run_cluster

    return run_cluster(Path(args.log_dir), connectors=args.connectors, routers=args.routers)


def cmd_bench(args: argparse.Namespace) -> int:
    from im.bench import main as bench_main

    return bench_main(args)


def cmd_config_doc(args: argparse.Namespace) -> int:
    from im.config import settings_table

    print(settings_table())
    return 0


# ------------------------------------------------------------------ clients


def _client(args: argparse.Namespace) -> Any:
    from im.client.session import ImClient

    return ImClient(args.gateway, transport=args.transport, ca_file=args.ca_file)


async def _register(args: argparse.Namespace) -> int:
    from im.client.gateway import GatewayClient

    password = args.password
    if password is None:
        password = getpass.getpass(f"new password for {args.username}: ")
    async with GatewayClient(args.gateway, ca_file=args.ca_file) as gw:
        _print_json(await gw.register(args.username, password, args.display_name))
    return 0


async def _send(args: argparse.Namespace) -> int:
    text = args.text if args.text is not None else sys.stdin.read().removesuffix("\n")
    if not text:
        _print_problem({"error": "usage", "detail": "nothing to send (empty text)"})
        return 1
    async with _client(args) as client:
        await client.login(args.user, _password(args), args.device or default_device("send"))
        await client.connect(sync=False)  # sending needs no history
        if args.to is not None:
            ack = await client.send_to_user(args.to, text, args.content_type)
        else:
            ack = await client.send(args.conversation, text, args.content_type)
        _print_json(
            {
                "client_msg_id": ack.client_msg_id,
                "msg_id": str(ack.msg_id),
                "server_ts": ack.server_ts,
                "conversation_id": ack.conversation_id,
            }
        )
    return 0


async def _listen(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        await client.login(args.user, _password(args), args.device or default_device("listen"))
        received = 0
        try:
            # the total timeout covers connecting and syncing too
            async with asyncio.timeout(args.timeout):
                await client.connect()
                async for event in client.events():
                    _print_json(event_json(event))
                    if isinstance(event, wire_pb2.Message):
                        received += 1
                        if args.count and received >= args.count:
                            return 0
        except TimeoutError:
            return 0
        _print_problem({"error": "closed", "detail": client.close_reason or "closed"})
        return 1


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
    async with _client(args) as client:
        await client.login(args.user, _password(args), args.device or default_device("chat"))
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
                        _print_problem(exc.to_dict())

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
            _print_problem({"error": "closed", "detail": client.close_reason or "closed"})
            return 1
    return 0


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    gateway_default = os.environ.get("IM_GATEWAY_URL") or DEFAULT_GATEWAY
    parser = argparse.ArgumentParser(prog="imctl", description="IM suite command line.")
    parser.add_argument(
        "--gateway",
        default=gateway_default,
        help=f"gateway base URL (env IM_GATEWAY_URL, default {DEFAULT_GATEWAY})",
    )
    parser.add_argument(
        "--ca-file",
        default=os.environ.get("IM_CA_FILE") or None,
        help="CA certificate to trust for a TLS gateway/connector (env IM_CA_FILE)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # Client commands accept --gateway after the subcommand too; SUPPRESS keeps the
    # top-level value when it is not repeated there.
    gateway_opt = argparse.ArgumentParser(add_help=False)
    gateway_opt.add_argument("--gateway", default=argparse.SUPPRESS, help="gateway base URL")
    gateway_opt.add_argument("--ca-file", default=argparse.SUPPRESS, help="CA to trust (TLS)")

    account = argparse.ArgumentParser(add_help=False, parents=[gateway_opt])
    account.add_argument("--user", "-u", required=True, help="username")
    account.add_argument(
        "--password", "-p", help="password (default: env IM_PASSWORD, else prompt)"
    )
    account.add_argument("--device", "-d", help="device id (default: cli-<hostname>)")
    account.add_argument("--transport", choices=("tcp", "ws"), default="tcp")

    p = sub.add_parser("standalone", help="run all five services in one process")
    p.set_defaults(func=cmd_standalone)

    p = sub.add_parser("serve", help="run one service")
    p.add_argument("service", choices=SERVICES)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("cluster", help="run a local distributed cluster (one process per service)")
    p.add_argument("--log-dir", default=".im-data/cluster", help="where each process logs")
    p.add_argument("--connectors", type=int, default=2)
    p.add_argument("--routers", type=int, default=2)
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("db", help="database maintenance")
    db_sub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_sub.add_parser("upgrade", help="create/upgrade the SQL schema").set_defaults(
        func=cmd_db_upgrade
    )

    p = sub.add_parser("config-doc", help="print the settings table (markdown)")
    p.set_defaults(func=cmd_config_doc)

    from im.cli import deadletters

    deadletters.register(sub)

    from im.cli import certs

    certs.register(sub)

    from im.bench import add_bench_arguments

    p = sub.add_parser("bench", help="benchmark a suite beside a bare relay")
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("register", parents=[gateway_opt], help="create a user")
    p.add_argument("username")
    p.add_argument("--password", "-p", help="password (prompted if not given)")
    p.add_argument("--display-name")
    p.set_defaults(func=_run_client(_register))

    p = sub.add_parser("send", parents=[account], help="send one message, print its SendAck")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", help="peer username or user id (1:1 conversation)")
    target.add_argument("--conversation", "-c", help="conversation id (d:... or g:...)")
    p.add_argument("--content-type", default="text/plain")
    p.add_argument("text", nargs="?", help="message text (default: read stdin)")
    p.set_defaults(func=_run_client(_send))

    p = sub.add_parser("listen", parents=[account], help="sync, then print incoming messages")
    p.add_argument("--count", "-n", type=int, default=0, help="stop after N messages")
    p.add_argument("--timeout", "-t", type=float, default=None, help="stop after S seconds")
    p.set_defaults(func=_run_client(_listen))

    p = sub.add_parser("chat", parents=[account], help="interactive 1:1 chat")
    p.add_argument("--to", required=True, help="peer username or user id")
    p.set_defaults(func=_run_client(_chat))

    from im.cli import groups  # here, not at the top: groups imports this module

    groups.register(sub, account)  # group ..., receipts, send --group

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
