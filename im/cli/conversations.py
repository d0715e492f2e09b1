"""``imctl conversations``, ``history`` and ``read``: a user's conversations with their
unread counts, past messages, and the read cursor, over REST only (no socket)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from im.cli.common import (
    UsageError,
    UserNames,
    account_parent,
    add_target,
    conversation_of,
    logged_in,
    message_json,
    peer_of,
    print_json,
    run_client,
)

if TYPE_CHECKING:
    from im.client.session import ImClient

LAST = 20  # history shows this many by default


async def _listed(client: ImClient, names: UserNames) -> list[dict[str, Any]]:
    """The user's conversations, each with a ``title`` (the name the user gave it, else
    a group's name or ``@peer``) and, for a 1:1, the peer's username."""
    out = []
    for conv in await client.gateway.conversations():
        conv = dict(conv)
        peer = conv.get("peer_id") or peer_of(conv["conversation_id"], client.user_id)
        if conv.get("kind") != "group" and peer:
            conv["peer"] = await names.of(int(peer))
            conv["title"] = "@" + conv["peer"]
        else:
            conv["title"] = conv.get("name") or conv["conversation_id"]
        own_name = (conv.get("settings") or {}).get("name")
        if own_name:
            conv["title"] = own_name
        out.append(conv)
    return out


async def _find(client: ImClient, args: argparse.Namespace) -> dict[str, Any] | None:
    cid = await conversation_of(client, args)
    for conv in await client.gateway.conversations():
        if conv["conversation_id"] == cid:
            return conv
    return None


async def _conversations(args: argparse.Namespace) -> int:
    async with logged_in(args, "conversations") as client:
        for conv in await _listed(client, UserNames(client)):
            if args.unread and not int(conv.get("unread") or 0):
                continue
            print_json(conv)
    return 0


async def _history(args: argparse.Namespace) -> int:
    async with logged_in(args, "history") as client:
        names = UserNames(client)
        names.know(client.user_id, args.user)
        cid = await conversation_of(client, args)
        if args.after_seq is not None:
            after = args.after_seq
        else:
            conv = await _find(client, args)
            if conv is None and args.to is not None:
                return 0  # no 1:1 with them yet: nothing was said
            last = int((conv or {}).get("last_seq") or 0)
            after = max(0, last - args.last)
        shown = 0
        async for message in client.gateway.history_all(cid, after):
            line = message_json(message)
            line["sender"] = await names.of(message.sender_id)
            await names.say_event(line, message)
            print_json(line)
            shown += 1
            if args.after_seq is not None and args.limit and shown >= args.limit:
                break
    return 0


async def _read(args: argparse.Namespace) -> int:
    async with logged_in(args, "read") as client:
        cid = await conversation_of(client, args)
        seq = args.seq
        if seq is None:
            conv = await _find(client, args)
            if conv is None and args.to is None:
                raise UsageError(f"{cid} is not a conversation of {args.user}")
            seq = int((conv or {}).get("last_seq") or 0)  # no 1:1 with them yet: 0
        if seq > 0:
            await client.gateway.read(cid, seq)
        print_json({"conversation_id": cid, "read_seq": seq})
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _seq(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def register(sub: argparse._SubParsersAction, gateway: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "conversations",
        parents=[account_parent(gateway, "conversations")],
        help="list your conversations with their unread counts",
        description="One JSON line per conversation: conversation_id, kind, title (the "
        "name you gave it, else the group's name or @peer), last_seq, delivered_seq, "
        "read_seq, unread, last_activity_at and your settings (muted, pinned, archived, "
        "name). Pinned ones come first, then the most recently active.",
    )
    p.add_argument("--unread", action="store_true", help="only those with unread messages")
    p.set_defaults(func=run_client(_conversations))

    p = sub.add_parser(
        "history",
        parents=[account_parent(gateway, "history")],
        help="print past messages of a conversation",
        description=f"Messages of a conversation as JSON lines, oldest first, each with "
        f"its sender's username: the last {LAST} by default; a group's system events say "
        'what happened in `event` ("alice added bob"). Leaves the cursors alone.',
    )
    add_target(p)
    p.add_argument(
        "--last", "-n", type=_positive, default=LAST, help=f"the last N messages ({LAST})"
    )
    p.add_argument("--after-seq", type=_seq, help="instead: every message after this seq")
    p.add_argument("--limit", type=_positive, help="with --after-seq: at most this many")
    p.set_defaults(func=run_client(_history))

    p = sub.add_parser(
        "read",
        parents=[account_parent(gateway, "read")],
        help="mark a conversation read (up to its last message, or --seq)",
        description="Move your read cursor of a conversation forward (never back): the "
        "other members' devices get a receipt, your other devices too.",
    )
    add_target(p)
    p.add_argument("--seq", "-s", type=_positive, help="read up to this seq (default: the last)")
    p.set_defaults(func=run_client(_read))
