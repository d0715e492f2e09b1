"""``imctl search``: find messages of your conversations by their words, over REST."""

from __future__ import annotations

import argparse
import sys

from im.cli.common import (
    UserNames,
    account_parent,
    conversation_of,
    logged_in,
    message_json,
    print_json,
    run_client,
)

PAGE = 20


async def _search(args: argparse.Namespace) -> int:
    async with logged_in(args, "search") as client:
        names = UserNames(client)
        names.know(client.user_id, args.user)
        scoped = args.to is not None or args.conversation is not None
        cid = await conversation_of(client, args) if scoped else None
        page = await client.gateway.search(args.query, cid, args.cursor, args.limit)
        for hit in page.hits:
            line = message_json(hit.message)
            line["sender"] = await names.of(hit.message.sender_id)
            line["snippet"] = hit.snippet
            print_json(line)
        if page.next_cursor:
            print(f"more: imctl search ... --cursor {page.next_cursor}", file=sys.stderr)
    return 0


def _limit(value: str) -> int:
    n = int(value)
    if not 1 <= n <= 100:
        raise argparse.ArgumentTypeError("between 1 and 100")
    return n


def register(sub: argparse._SubParsersAction, gateway: argparse.ArgumentParser) -> None:
    from im.client.gateway import as_group_id

    p = sub.add_parser(
        "search",
        parents=[account_parent(gateway, "search")],
        help="find messages by their words",
        description="Text messages of your conversations holding every word of QUERY "
        "(whole words, any case, accents ignored), newest first, as JSON lines with the "
        "sender's username and a snippet. Only what you may read: nothing from before you "
        "joined a group that hides its history.",
    )
    p.add_argument("query", metavar="QUERY", help="the words to find (no operators)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--conversation", "-c", metavar="ID", help="only this conversation")
    where.add_argument(
        "--group",
        "-g",
        dest="conversation",
        metavar="GROUP",
        type=as_group_id,
        help="only this group (g:<n> or just the number)",
    )
    where.add_argument("--to", metavar="USER", help="only your 1:1 conversation with USER")
    p.add_argument("--limit", "-n", type=_limit, default=PAGE, help=f"at most N hits ({PAGE})")
    p.add_argument("--cursor", help="the older hits: the cursor a previous search printed")
    p.set_defaults(func=run_client(_search))
