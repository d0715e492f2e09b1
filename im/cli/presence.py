"""``imctl presence`` (who of a conversation is online, and when the others were last
seen) and ``imctl presence-visibility`` (show or hide your own), over REST."""

from __future__ import annotations

import argparse

from im.cli.common import (
    UserNames,
    account_parent,
    add_target,
    clock_time,
    conversation_of,
    logged_in,
    print_json,
    run_client,
)


async def _presence(args: argparse.Namespace) -> int:
    async with logged_in(args, "presence") as client:
        names = UserNames(client)
        cid = await conversation_of(client, args)
        for member in await client.gateway.conversation_presence(cid):
            line = dict(member)
            line["username"] = await names.of(int(member["user_id"]))
            seen = member.get("last_seen_ms")
            if seen and not member["online"]:
                line["last_seen"] = clock_time(int(seen))
            print_json(line)
    return 0


async def _visibility(args: argparse.Namespace) -> int:
    async with logged_in(args, "presence") as client:
        if args.state is None:
            print_json(await client.gateway.my_presence())
        else:
            print_json(await client.gateway.set_presence_visible(args.state == "show"))
    return 0


def register(sub: argparse._SubParsersAction, gateway: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "presence",
        parents=[account_parent(gateway, "presence")],
        help="who of a conversation is online, and when the others were last seen",
        description="One JSON line per other member: user_id, username, online, "
        "last_seen_ms (null: unknown, or the user hides presence) and last_seen (local "
        "time) when offline. Members only.",
    )
    add_target(p)
    p.set_defaults(func=run_client(_presence))

    p = sub.add_parser(
        "presence-visibility",
        parents=[account_parent(gateway, "presence")],
        help="show or hide your online state and last seen",
        description="Without an argument: your setting. `hide`: nobody sees you online or "
        "your last-seen time, and nothing is pushed; `show`: back to normal.",
    )
    p.add_argument("state", nargs="?", choices=["show", "hide"], help="the new setting")
    p.set_defaults(func=run_client(_visibility))
