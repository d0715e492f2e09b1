"""``imctl whoami`` and ``imctl logout``: the account behind a password, and ending
sessions (one device's, or every device's)."""

from __future__ import annotations

import argparse

from im.cli.common import UsageError, account_parent, logged_in, print_json, run_client


async def _whoami(args: argparse.Namespace) -> int:
    async with logged_in(args, "whoami") as client:
        print_json(await client.gateway.me())
    return 0


async def _logout(args: argparse.Namespace) -> int:
    if args.all == (args.device is not None):
        raise UsageError("say whose session ends: --device ID (one device) or --all")
    async with logged_in(args, "logout") as client:
        if args.all:
            await client.logout_all()
            print_json({"logged_out": "every device", "user_id": client.user_id})
        else:
            # Logged in as that device: its previous session ended and its socket was
            # kicked; this session ends too.
            await client.gateway.logout()
            print_json({"logged_out": args.device, "user_id": client.user_id})
    return 0


def register(sub: argparse._SubParsersAction, gateway: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "whoami",
        parents=[account_parent(gateway, "whoami")],
        help="print the account: user_id, username, display name",
        description="Log in and print the account as JSON (user_id, username, "
        "display_name, created_at).",
    )
    p.set_defaults(func=run_client(_whoami))

    p = sub.add_parser(
        "logout",
        parents=[account_parent(gateway, "logout")],
        help="end the session of one device (--device) or of all (--all)",
        description="End sessions: --device ID ends that device's (its socket is "
        "kicked, e.g. a chat left running elsewhere: cli-chat-<host>-<peer>); --all ends "
        "every session of the user on every device (logout-all).",
    )
    p.add_argument("--all", action="store_true", help="every device of the user")
    p.set_defaults(func=run_client(_logout))
