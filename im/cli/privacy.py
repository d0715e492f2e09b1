"""``imctl block``, ``unblock``, ``blocks`` and ``privacy``: whom the user blocked, and
who may add the user to groups."""

from __future__ import annotations

import argparse

from im.cli.common import account_parent, logged_in, print_json, run_client


async def _block(args: argparse.Namespace) -> int:
    async with logged_in(args, "block") as client:
        user_id = await client.resolve_user(args.peer)
        if args.undo:
            await client.gateway.unblock(user_id)
        else:
            await client.gateway.block(user_id)
        print_json({"user_id": user_id, "blocked": not args.undo})
    return 0


async def _blocks(args: argparse.Namespace) -> int:
    async with logged_in(args, "blocks") as client:
        print_json({"blocked": await client.gateway.blocks()})
    return 0


async def _privacy(args: argparse.Namespace) -> int:
    async with logged_in(args, "privacy") as client:
        if args.invites is None:
            print_json(await client.gateway.privacy())
        else:
            contacts_only = args.invites == "contacts"
            print_json(await client.gateway.set_privacy(invites_from_contacts_only=contacts_only))
    return 0


def register(sub: argparse._SubParsersAction, gateway: argparse.ArgumentParser) -> None:
    for name, undo, summary in (
        ("block", False, "block a user: no 1:1 messages either way, no group invites from them"),
        ("unblock", True, "unblock a user"),
    ):
        p = sub.add_parser(
            name, parents=[account_parent(gateway, name)], help=summary, description=summary + "."
        )
        p.add_argument("peer", metavar="USER", help="username or numeric user id")
        p.set_defaults(func=run_client(_block), undo=undo)

    p = sub.add_parser(
        "blocks",
        parents=[account_parent(gateway, "blocks")],
        help="list the users you blocked",
        description="Print the ids of the users you blocked, as JSON.",
    )
    p.set_defaults(func=run_client(_blocks))

    p = sub.add_parser(
        "privacy",
        parents=[account_parent(gateway, "privacy")],
        help="show or set who may add you to groups",
        description="Without options: print your privacy settings. --invites contacts: "
        "only contacts (users with a 1:1 conversation with you in which you have read "
        "something) may add you to groups; --invites everyone: anybody may.",
    )
    p.add_argument("--invites", choices=["everyone", "contacts"], help="who may add you to groups")
    p.set_defaults(func=run_client(_privacy))
