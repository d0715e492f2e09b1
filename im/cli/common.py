"""What every ``imctl`` client command shares: output (JSON lines on stdout, problems
as one JSON object on stderr with exit status 1), passwords, default device ids, the
parent parsers of the account options, and the wrapper that runs an async command.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from im.client.errors import ClientError, kick_reason_name
from im.v1 import wire_pb2

if TYPE_CHECKING:
    from im.client.session import ImClient

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


def print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, ensure_ascii=False), flush=True)


def print_problem(data: dict[str, Any]) -> None:
    print(json.dumps(data, ensure_ascii=False), file=sys.stderr, flush=True)


def password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return args.password
    env = os.environ.get("IM_PASSWORD")
    if env:
        return env
    return getpass.getpass(f"password for {args.user}: ")


def run_client(coro_fn: Callable[[argparse.Namespace], Awaitable[int]]) -> Callable[..., int]:
    """Run an async client command; ClientError and socket errors become exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(coro_fn(args))  # type: ignore[arg-type]
        except ClientError as exc:
            problem = exc.to_dict()
            if problem.get("retry_after") is not None:
                problem["hint"] = f"retry after {problem['retry_after']:g} s"
            print_problem(problem)
        except (OSError, TimeoutError) as exc:
            print_problem({"error": type(exc).__name__, "detail": str(exc) or repr(exc)})
        return 1

    return run


def make_client(args: argparse.Namespace, **kwargs: Any) -> ImClient:
    from im.client.session import ImClient

    return ImClient(args.gateway, transport=args.transport, ca_file=args.ca_file, **kwargs)


# ------------------------------------------------------------------ parsers


def gateway_parent() -> argparse.ArgumentParser:
    """--gateway and --ca-file, accepted after the subcommand too; SUPPRESS keeps the
    top-level value when they are not repeated there."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--gateway", default=argparse.SUPPRESS, help="gateway base URL")
    parent.add_argument("--ca-file", default=argparse.SUPPRESS, help="CA to trust (TLS)")
    return parent


def account_parent(gateway: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of every command that logs in."""
    parent = argparse.ArgumentParser(add_help=False, parents=[gateway])
    parent.add_argument("--user", "-u", required=True, help="username")
    parent.add_argument("--password", "-p", help="password (default: env IM_PASSWORD, else prompt)")
    parent.add_argument("--device", "-d", help="device id (default: cli-<hostname>)")
    parent.add_argument("--transport", choices=("tcp", "ws"), default="tcp")
    return parent
