"""``imctl group ...`` and ``imctl receipts``: groups and read receipts from a shell.

Hooked into the parser by ``register`` (called from ``im.cli.main.build_parser``).
Like the other client commands they print JSON lines on stdout and problems as JSON on
stderr with exit status 1. They only talk REST: no socket is opened.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from im.cli import group_lifecycle
from im.cli.common import UserNames, logged_in, print_json, run_client
from im.client.gateway import as_group_id

if TYPE_CHECKING:
    from im.client.session import ImClient

# Name lookups run this many at a time: quick for a long --members list, gentle on
# the gateway.
LOOKUP_CONCURRENCY = 16


def _split_members(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


async def _resolve(client: ImClient, members: list[str]) -> list[int]:
    """User ids from usernames or ids (a name is looked up first: names may be digits)."""
    gate = asyncio.Semaphore(LOOKUP_CONCURRENCY)

    async def one(member: str) -> int:
        async with gate:
            return await client.resolve_user(member)

    return list(await asyncio.gather(*(one(m) for m in members)))


def _with_client(
    body: Callable[[ImClient, argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], Awaitable[int]]:
    """Log in (REST only) and run ``body(client, args)``; the client is an ImClient
    so that name resolution (and its cache) is the one ``send --to`` uses."""

    async def run(args: argparse.Namespace) -> int:
        async with logged_in(args, "group") as client:
            return await body(client, args)

    return run


# ------------------------------------------------------------------ commands


async def _create(client: ImClient, args: argparse.Namespace) -> int:
    member_ids = await _resolve(client, _split_members(args.members))
    print_json(await client.gateway.create_group(args.name, member_ids, args.history_visible))
    return 0


async def _info(client: ImClient, args: argparse.Namespace) -> int:
    print_json(await client.gateway.group(args.group))
    return 0


async def _add(client: ImClient, args: argparse.Namespace) -> int:
    user_ids = await _resolve(client, args.members)
    added = await client.gateway.add_members(args.group, user_ids)
    print_json({"conversation_id": as_group_id(args.group), "added": added})
    return 0


async def _remove(client: ImClient, args: argparse.Namespace) -> int:
    gid = as_group_id(args.group)
    # One line per removal as it happens: after a failure the output still says
    # which members are already gone.
    for user_id in await _resolve(client, args.members):
        await client.gateway.remove_member(gid, user_id)
        print_json({"conversation_id": gid, "removed": user_id})
    return 0


async def _leave(client: ImClient, args: argparse.Namespace) -> int:
    await client.gateway.leave_group(args.group)
    print_json({"conversation_id": as_group_id(args.group), "left": True})
    return 0


async def _members(client: ImClient, args: argparse.Namespace) -> int:
    """Page by page, each member with its username (looked up a few at a time)."""
    names = UserNames(client, LOOKUP_CONCURRENCY)
    cursor: str | None = None
    while True:
        page = await client.gateway.members(args.group, cursor, args.page_size)
        usernames = await names.all([int(m["user_id"]) for m in page.members])
        for member, username in zip(page.members, usernames, strict=True):
            print_json({"user_id": member["user_id"], "username": username, **member})
        if page.next_cursor is None or not page.members:
            return 0
        cursor = page.next_cursor


async def _role(client: ImClient, args: argparse.Namespace) -> int:
    (user_id,) = await _resolve(client, [args.member])
    print_json(await client.gateway.set_role(args.group, user_id, args.role))
    return 0


async def _receipts(client: ImClient, args: argparse.Namespace) -> int:
    print_json(
        await client.gateway.receipts(
            args.conversation, args.seq, cursor=args.cursor, limit=args.limit, list=args.list
        )
    )
    return 0


# -------------------------------------------------------------------- parser


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def register(sub: argparse._SubParsersAction, account: argparse.ArgumentParser) -> None:
    """Add ``group`` and ``receipts`` to ``sub`` (the subparsers of imctl).
    ``account`` is the parent parser of client commands (--user, --password, --device,
    --gateway)."""
    group_help = "group id: g:<digits> or just the digits"

    p = sub.add_parser("group", help="create and manage groups")
    actions = p.add_subparsers(dest="group_command", metavar="ACTION", required=True)

    a = actions.add_parser("create", parents=[account], help="create a group; print it")
    a.add_argument("name", help="group name")
    a.add_argument(
        "--members", "-m", default="", help="comma-separated usernames or user ids to add"
    )
    a.add_argument(
        "--history-visible",
        action="store_true",
        help="members added later can read messages from before they joined",
    )
    a.set_defaults(func=run_client(_with_client(_create)))

    a = actions.add_parser("info", parents=[account], help="print a group and your role")
    a.add_argument("group", help=group_help)
    a.set_defaults(func=run_client(_with_client(_info)))

    a = actions.add_parser("add", parents=[account], help="add members (owner/admin)")
    a.add_argument("group", help=group_help)
    a.add_argument("members", nargs="+", metavar="MEMBER", help="username or user id")
    a.set_defaults(func=run_client(_with_client(_add)))

    a = actions.add_parser("remove", parents=[account], help="remove members (owner/admin)")
    a.add_argument("group", help=group_help)
    a.add_argument("members", nargs="+", metavar="MEMBER", help="username or user id")
    a.set_defaults(func=run_client(_with_client(_remove)))

    a = actions.add_parser("leave", parents=[account], help="leave a group")
    a.add_argument("group", help=group_help)
    a.set_defaults(func=run_client(_with_client(_leave)))

    a = actions.add_parser(
        "members", parents=[account], help="print members (with usernames) as JSON lines"
    )
    a.add_argument("group", help=group_help)
    a.add_argument("--page-size", type=_positive, default=1000, help="members per request")
    a.set_defaults(func=run_client(_with_client(_members)))

    a = actions.add_parser("role", parents=[account], help="make a member admin or member")
    a.add_argument("group", help=group_help)
    a.add_argument("member", help="username or user id")
    a.add_argument("role", choices=("admin", "member"))
    a.set_defaults(func=run_client(_with_client(_role)))

    group_lifecycle.register(actions, account, _with_client, group_help)

    p = sub.add_parser(
        "receipts", parents=[account], help="who has (not) read a message: counts and pages"
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--conversation", "-c", help="conversation id (d:... or g:...)")
    target.add_argument("--group", "-g", dest="conversation", type=as_group_id, help=group_help)
    p.add_argument("--seq", "-s", type=_positive, required=True, help="the message's seq")
    p.add_argument("--list", choices=("read", "unread", "both"), default="both", help="which lists")
    p.add_argument("--limit", type=_positive, default=100, help="page size of each list")
    p.add_argument("--cursor", help="next_cursor of the previous page")
    p.set_defaults(func=run_client(_with_client(_receipts)))
