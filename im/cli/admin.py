"""``imctl admin ...``: the operators' commands (disable, enable, reset-password, delete,
sessions, import, show), on the gateway's admin REST API with an admin token."""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from im.cli.common import UsageError, print_json, run_client

IMPORT_FIELDS = ("username", "display_name", "password_hash", "password")


def admin_token(args: argparse.Namespace) -> str:
    """--token, else IM_ADMIN_TOKEN, else the first token of --token-file /
    IM_ADMIN_TOKEN_FILE (a line `name:token` or `token`)."""
    if args.token:
        return str(args.token)
    if os.environ.get("IM_ADMIN_TOKEN"):
        return os.environ["IM_ADMIN_TOKEN"]
    path = args.token_file or os.environ.get("IM_ADMIN_TOKEN_FILE")
    if path:
        for line in Path(path).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                return line.partition(":")[2].strip() if ":" in line else line
    raise UsageError("no admin token: give --token, IM_ADMIN_TOKEN or IM_ADMIN_TOKEN_FILE")


def _client(args: argparse.Namespace) -> Any:
    from im.client.admin import AdminClient

    return AdminClient(args.gateway, admin_token(args), actor=args.actor, ca_file=args.ca_file)


async def _disable(args: argparse.Namespace) -> int:
    async with _client(args) as admin:
        print_json(await admin.disable(await admin.resolve(args.user)))
    return 0


async def _enable(args: argparse.Namespace) -> int:
    async with _client(args) as admin:
        print_json(await admin.enable(await admin.resolve(args.user)))
    return 0


async def _reset_password(args: argparse.Namespace) -> int:
    password = args.password
    if args.prompt:
        password = getpass.getpass(f"new password for {args.user}: ")
    async with _client(args) as admin:
        print_json(await admin.reset_password(await admin.resolve(args.user), password))
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with _client(args) as admin:
        user_id = await admin.resolve(args.user)
        print_json(await admin.delete(user_id, erase_messages=args.erase_messages))
    return 0


async def _sessions(args: argparse.Namespace) -> int:
    async with _client(args) as admin:
        print_json(await admin.sessions(await admin.resolve(args.user)))
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with _client(args) as admin:
        print_json(await admin.user(await admin.resolve(args.user)))
    return 0


def read_users(path: str, fmt: str) -> Iterator[dict[str, Any]]:
    """Rows of a CSV file (a header line naming the columns) or of JSON lines."""
    if fmt == "auto":
        fmt = "csv" if path.endswith(".csv") else "jsonl"
    with open(path, newline="", encoding="utf-8") as file:
        if fmt == "csv":
            reader = csv.DictReader(file)
            for row in reader:
                if None in row:
                    raise UsageError(
                        f"{path}:{reader.line_num}: more fields than the header names (quote "
                        'values with commas: argon2 hashes have some, "$argon2id$v=19$m=...")'
                    )
                yield {k: v for k, v in row.items() if k in IMPORT_FIELDS and v}
            return
        for number, line in enumerate(file, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UsageError(f"{path}:{number}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise UsageError(f"{path}:{number}: expected a JSON object")
                yield {k: v for k, v in row.items() if k in IMPORT_FIELDS and v}


async def _import(args: argparse.Namespace) -> int:
    users = list(read_users(args.file, args.format))
    started = time.perf_counter()
    async with _client(args) as admin:
        result = await admin.import_users(users, chunk=args.chunk, concurrency=args.concurrency)
    seconds = time.perf_counter() - started
    for error in result["errors"]:
        print_json({"not_imported": error})
    print_json(
        {
            "imported": result["imported"],
            "not_imported": len(result["errors"]),
            "rows": len(users),
            "seconds": round(seconds, 3),
            "users_per_second": round(result["imported"] / seconds) if seconds > 0 else None,
        }
    )
    return 0


def _admin_parent(gateway: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, parents=[gateway])
    parent.add_argument("--token", help="admin token (default: env IM_ADMIN_TOKEN)")
    parent.add_argument(
        "--token-file",
        help="file of admin tokens, the first is used (default: env IM_ADMIN_TOKEN_FILE)",
    )
    parent.add_argument(
        "--actor",
        default=os.environ.get("USER", ""),
        help="your name in the gateway's audit log (default: $USER)",
    )
    return parent


def register(sub: argparse._SubParsersAction, gateway: argparse.ArgumentParser) -> None:
    admin = sub.add_parser(
        "admin",
        help="operators: disable, enable, reset-password, delete, sessions, import",
        description="Operator commands on the gateway's admin API (/v1/admin). They "
        "authenticate with an admin token (the gateway's IM_ADMIN_TOKEN or a line of its "
        "IM_ADMIN_TOKEN_FILE), not as a chat user; every action is in the gateway's "
        "audit log. USER is a username or a user id. Output: JSON lines.",
    )
    commands = admin.add_subparsers(dest="admin_command", metavar="ADMIN_COMMAND", required=True)
    parent = _admin_parent(gateway)

    def command(name: str, func: Any, help_text: str, description: str) -> Any:
        p = commands.add_parser(name, parents=[parent], help=help_text, description=description)
        p.set_defaults(func=run_client(func))
        return p

    p = command(
        "disable",
        _disable,
        "refuse the user's logins, end its sessions and kick its sockets",
        "Disable USER: logins are refused, every session ends at once (its tokens stop "
        "working) and every socket of the user is kicked. Undo with `imctl admin enable`.",
    )
    p.add_argument("user", metavar="USER")
    p = command("enable", _enable, "let a disabled user log in again", "Enable USER again.")
    p.add_argument("user", metavar="USER")
    p = command(
        "reset-password",
        _reset_password,
        "set a new password (given or generated); every session ends",
        "Set a new password for USER and end every session of the user. Without "
        "--password or --prompt the gateway generates one and prints it once (it is not "
        "stored or logged): hand it to the user, who should change it.",
    )
    p.add_argument("user", metavar="USER")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--password", help="the new password (visible in your shell history)")
    secret.add_argument("--prompt", action="store_true", help="ask for the new password")
    p = command(
        "delete",
        _delete,
        "delete a user (messages kept as from a deleted user, or erased)",
        "Delete USER: its username and display name are replaced (deleted:<id>, "
        '"Deleted user"), its password removed, its sessions ended. Its messages stay, '
        "shown as from a deleted user, unless --erase-messages: then their bodies are "
        "erased from the message store. It leaves every group: one it owns passes to its "
        "first admin (else member), one it is alone in is dissolved. Running it again is "
        "safe.",
    )
    p.add_argument("user", metavar="USER")
    p.add_argument(
        "--erase-messages", action="store_true", help="erase the bodies of the user's messages"
    )
    p = command(
        "sessions",
        _sessions,
        "list a user's open sessions (device, login, last refresh, connector)",
        "List USER's open sessions: device, created and last seen (login or last token "
        "refresh), expiry, and the connector holding the device's socket when online.",
    )
    p.add_argument("user", metavar="USER")
    p = command("show", _show, "show a user with its disabled/deleted flags", "Show USER.")
    p.add_argument("user", metavar="USER")
    p = command(
        "import",
        _import,
        "bulk import users from CSV or JSON lines",
        "Create many users at once from FILE: CSV with a header line, or JSON lines, with "
        "the fields username, display_name (optional) and one of password_hash (argon2 "
        "in PHC format, $argon2id$v=19$m=...,t=...,p=...$salt$hash: stored as it is, "
        "thousands a second), password (hashed by the server: about 100 a second) or "
        "neither (no login until `imctl admin reset-password`). Rows that cannot be "
        "imported (username taken or repeated, invalid) are printed; the others are "
        "imported. The last line sums up, with the rate.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--format",
        choices=("auto", "csv", "jsonl"),
        default="auto",
        help="auto: csv for *.csv, else JSON lines",
    )
    p.add_argument("--chunk", type=int, default=5000, help="users per request (max 10000)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="requests in flight (1: in file order, so a repeat is always the later row)",
    )
