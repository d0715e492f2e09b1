"""What every ``imctl`` client command shares: output (JSON lines on stdout, problems
as one JSON object on stderr with exit status 1), passwords, default device ids, the
parent parsers of the account options, and the wrapper that runs an async command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from im.client.errors import ClientError, error_code_name, kick_reason_name
from im.client.group_events import describe, mentioned_user_ids
from im.events import EDIT, is_group_event
from im.v1 import wire_pb2

if TYPE_CHECKING:
    from im.client.session import ImClient

DEFAULT_GATEWAY = "http://127.0.0.1:8080"


# Device ids are 1-64 characters of A-Z a-z 0-9 _ . : - (docs/rest-api.md).
_DEVICE_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")
# Commands that keep their device from one run to the next (the next run replaces the
# previous one's session); every other command gets a device of its own process.
LASTING_DEVICES = ("chat", "listen")


class UsageError(ClientError):
    """A command line that cannot work (e.g. a chat with oneself): exit status 1."""

    def to_dict(self) -> dict[str, Any]:
        return {"error": "usage", "detail": str(self)}


def host_name() -> str:
    host = socket.gethostname().split(".")[0] or "host"
    return _DEVICE_UNSAFE.sub("-", host)[:24]


def default_device(command: str, target: str = "") -> str:
    """The device a command logs in as when --device is not given.

    A login ends the previous session of its device and kicks its socket, so no two
    commands share one: ``chat`` is ``cli-chat-<host>-<peer or group>`` (a chat with
    someone else, or one that fails on a mistyped name, leaves a running chat alone; the
    same chat started again replaces the old one), ``listen`` is ``cli-listen-<host>``,
    and the one-shot commands (send, history, group ...) log in as a device of their
    own process, ``cli-<command>-<host>-<pid>``, and end its session when done.
    """
    host = host_name()
    if command == "chat" and target:
        return f"cli-chat-{host}-{_DEVICE_UNSAFE.sub('-', target)}"[:64]
    if command in LASTING_DEVICES:
        return f"cli-{command}-{host}"
    return f"cli-{command}-{host}-{os.getpid()}"[:64]


def device_help(command: str) -> str:
    if command == "logout":
        return "the device whose session ends (its socket is kicked)"
    if command == "chat":
        return "device id to log in as (default: cli-chat-<host>-<peer or group>)"
    if command in LASTING_DEVICES:
        return f"device id to log in as (default: cli-{command}-<host>)"
    return (
        f"device id to log in as (default: cli-{command}-<host>-<pid>, a device of this "
        "run whose session ends when it is done)"
    )


# ------------------------------------------------------------------- output


def message_json(message: wire_pb2.Message) -> dict[str, Any]:
    text: str | None = None
    if message.content_type.startswith("text/") or message.content_type == EDIT:
        text = message.body.decode("utf-8", errors="replace")
    out: dict[str, Any] = {
        "msg_id": str(message.msg_id),  # 64-bit: a string, as on the REST API
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "sender_id": message.sender_id,
        "sender_device": message.sender_device,
        "content_type": message.content_type,
        "text": text,
        "server_ts": message.server_ts,
        **({"attachment_ids": list(message.attachment_ids)} if message.attachment_ids else {}),
    }
    # Events and their effects, only where there are some (as on the REST API).
    if message.refers_to:
        out["refers_to"] = str(message.refers_to)
    if message.edited_at:
        out["edited_at"] = message.edited_at
    if message.recalled:
        out["recalled"] = True
    return out


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
    if isinstance(event, wire_pb2.Typing):
        started = event.state == wire_pb2.TYPING_STATE_STARTED
        return {
            "typing": {
                "conversation_id": event.conversation_id,
                "user_id": event.user_id,
                "state": "started" if started else "stopped",
                "expires_in_ms": event.expires_in_ms,
            }
        }
    if isinstance(event, wire_pb2.Presence):
        return {
            "presence": {
                "user_id": event.user_id,
                "online": event.online,
                "last_seen_ms": event.last_seen_ms or None,
            }
        }
    if isinstance(event, wire_pb2.Error):
        return {"error": {"code": error_code_name(event.code), "message": event.message}}
    if isinstance(event, wire_pb2.ConversationSettingsChanged):
        return {
            "settings_changed": {
                "conversation_id": event.conversation_id,
                "muted_until": event.muted_until,
                "pinned": event.pinned,
                "archived": event.archived,
                "name": event.name,
                "updated_at": event.updated_at,
            }
        }
    to_dict = getattr(event, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())  # the client's own events: reconnecting, reconnected
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


def account_parent(gateway: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The options of a command that logs in (a new parent per command: argparse shares
    a parent's actions, and the --device default differs by command)."""
    parent = argparse.ArgumentParser(add_help=False, parents=[gateway])
    parent.add_argument("--user", "-u", required=True, help="username")
    parent.add_argument("--password", "-p", help="password (default: env IM_PASSWORD, else prompt)")
    parent.add_argument("--device", "-d", help=device_help(command))
    parent.add_argument(
        "--transport", choices=("tcp", "ws"), default="tcp", help="socket to the connector"
    )
    return parent


def add_target(parser: argparse.ArgumentParser) -> None:
    """``--to USER | --conversation ID | --group GROUP``, exactly one (``--group`` fills
    ``conversation`` with the group's conversation id)."""
    from im.client.gateway import as_group_id

    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--to", metavar="USER", help="a user (name or id): your 1:1 conversation with them"
    )
    target.add_argument(
        "--conversation", "-c", metavar="ID", help="a conversation id (d:<a>:<b> or g:<n>)"
    )
    target.add_argument(
        "--group",
        "-g",
        dest="conversation",
        metavar="GROUP",
        type=as_group_id,
        help="a group (g:<n> or just the number)",
    )


def check_not_self(args: argparse.Namespace) -> None:
    """``--to`` naming the user itself, caught before logging in."""
    if getattr(args, "to", None) is not None and args.to == args.user:
        raise UsageError(_self_message(args))


def _self_message(args: argparse.Namespace) -> str:
    return (
        f"--to {args.to} is you: a direct conversation needs two different users "
        "(name someone else, or a group with -g)"
    )


async def conversation_of(client: ImClient, args: argparse.Namespace) -> str:
    """The conversation id that --to / --conversation / --group name."""
    if getattr(args, "to", None) is None:
        return str(args.conversation)
    from im.ids import direct_conversation_id

    peer = await client.resolve_user(args.to)
    if peer == client.user_id:
        raise UsageError(_self_message(args))
    return direct_conversation_id(client.user_id, peer)


@contextlib.asynccontextmanager
async def logged_in(
    args: argparse.Namespace, command: str, target: str = "", **kwargs: Any
) -> AsyncIterator[ImClient]:
    """A client logged in as --user on --device or the command's default device; a
    device of this run (see ``default_device``) is logged out when done."""
    check_not_self(args)
    device = args.device or default_device(command, target)
    client = make_client(args, **kwargs)
    one_shot = args.device is None and command not in LASTING_DEVICES
    try:
        await client.login(args.user, password(args), device)
        yield client
    finally:
        await client.close(logout=one_shot)


# ------------------------------------------------------------------- people


class UserNames:
    """Usernames by user id, looked up once each (a few at a time)."""

    def __init__(self, client: ImClient, concurrency: int = 16) -> None:
        self._client = client
        self._names: dict[int, str] = {}
        self._gate = asyncio.Semaphore(concurrency)

    def know(self, user_id: int, username: str) -> None:
        self._names[user_id] = username

    async def of(self, user_id: int) -> str:
        """The username of ``user_id`` (its number when there is no such user)."""
        if user_id not in self._names:
            async with self._gate:
                try:
                    user = await self._client.gateway.user(user_id)
                    self._names[user_id] = str(user["username"])
                except ClientError:
                    self._names[user_id] = str(user_id)
        return self._names[user_id]

    async def all(self, user_ids: list[int]) -> list[str]:
        return list(await asyncio.gather(*(self.of(uid) for uid in user_ids)))

    def known(self, user_id: int) -> str | None:
        """The username of ``user_id`` if it was looked up already (no call)."""
        return self._names.get(user_id)

    async def say_event(self, line: dict[str, Any], message: wire_pb2.Message) -> None:
        """Adds to a message's ``line`` what a group's system event says, as ``event``
        ("alice added bob"); other messages are left as they are."""
        if is_group_event(message.content_type):
            await self.all(mentioned_user_ids(message.body))
            line["event"] = describe(message.content_type, message.body, self.known)


def peer_of(conversation_id: str, me: int) -> int | None:
    """The other user of a direct conversation (None for a group)."""
    from im.ids import parse_direct

    pair = parse_direct(conversation_id)
    if pair is None:
        return None
    return pair[1] if pair[0] == me else pair[0]


def clock_time(server_ts_ms: int, now: datetime | None = None) -> str:
    """``14:03:22`` today, ``2026-12-01 14:03`` on another day (local time)."""
    when = datetime.fromtimestamp(server_ts_ms / 1000)
    today = (now or datetime.now()).date()
    return when.strftime("%H:%M:%S") if when.date() == today else when.strftime("%Y-%m-%d %H:%M")
