"""``imctl register``, ``send`` and ``listen``: one account, one message, a stream."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from im.cli.common import (
    UsageError,
    UserNames,
    account_parent,
    add_target,
    conversation_of,
    event_json,
    logged_in,
    print_json,
    print_problem,
    run_client,
)
from im.v1 import wire_pb2


async def _register(args: argparse.Namespace) -> int:
    from im.client.gateway import GatewayClient

    secret = args.password
    if secret is None:
        secret = getpass.getpass(f"new password for {args.username}: ")
    async with GatewayClient(args.gateway, ca_file=args.ca_file) as gw:
        print_json(await gw.register(args.username, secret, args.display_name))
    return 0


async def _send(args: argparse.Namespace) -> int:
    text = args.text if args.text is not None else sys.stdin.read().removesuffix("\n")
    if not text:
        raise UsageError("nothing to send (empty text)")
    async with logged_in(args, "send") as client:
        conversation = await conversation_of(client, args)  # before the socket opens
        await client.connect(sync=False)  # sending needs no history
        ack = await client.send(conversation, text, args.content_type)
        print_json(
            {
                "client_msg_id": ack.client_msg_id,
                "msg_id": str(ack.msg_id),
                "server_ts": ack.server_ts,
                "conversation_id": ack.conversation_id,
            }
        )
    return 0


# ``listen --count N`` gives up after this long unless told otherwise (--timeout).
COUNT_TIMEOUT = 30.0


def listen_timeout(args: argparse.Namespace) -> float | None:
    """Seconds listen runs: --timeout (0: no limit); with --count and no --timeout,
    COUNT_TIMEOUT, so a script waiting for N messages never hangs."""
    if args.timeout is not None:
        return args.timeout or None
    return COUNT_TIMEOUT if args.count else None


async def _listen(args: argparse.Namespace) -> int:
    limit = listen_timeout(args)
    async with logged_in(args, "listen", reconnect=True) as client:
        received = 0
        try:
            # the total timeout covers connecting and syncing too
            async with asyncio.timeout(limit):
                await client.connect()
                names = UserNames(client)
                names.know(client.user_id, args.user)
                async for event in client.events():
                    line = event_json(event)
                    if not isinstance(event, wire_pb2.Message):
                        print_json(line)
                        continue
                    await names.say_event(line, event)
                    print_json(line)
                    received += 1
                    if args.count and received >= args.count:
                        return 0
        except TimeoutError:
            if not args.count:
                return 0  # listened for as long as asked
            print_problem(
                {
                    "error": "timeout",
                    "detail": f"{received} of {args.count} messages in {limit:g} s",
                }
            )
            return 1
        print_problem({"error": "closed", "detail": client.close_reason or "closed"})
        return 1


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def register(sub: argparse._SubParsersAction, gateway: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "register",
        parents=[gateway],
        help="create a user",
        description="Create a user; prints it (its user_id) as JSON.",
    )
    p.add_argument("username", help="3-32 characters of A-Z a-z 0-9 _ . -")
    p.add_argument("--password", "-p", help="password (prompted if not given)")
    p.add_argument("--display-name", help="name shown to others (default: the username)")
    p.set_defaults(func=run_client(_register))

    p = sub.add_parser(
        "send",
        parents=[account_parent(gateway, "send")],
        help="send one message, print its SendAck",
        description="Send one message to a user (--to), a conversation (-c) or a group "
        "(-g): exactly one of them. Prints the SendAck as JSON once the suite has it.",
    )
    add_target(p)
    p.add_argument("--content-type", default="text/plain", help="default: text/plain")
    p.add_argument("text", nargs="?", help="message text (default: read stdin)")
    p.set_defaults(func=run_client(_send))

    p = sub.add_parser(
        "listen",
        parents=[account_parent(gateway, "listen")],
        help="sync, then print incoming messages",
        description="Connect, then sync: prints what arrived while this user was away "
        "(after its delivered cursor), then every message, receipt and kick as it comes, "
        "as JSON lines; reconnects by itself. Every device of a user gets every message, "
        "so a listen beside an open chat sees what arrives from then on.",
    )
    p.add_argument(
        "--count",
        "-n",
        type=_positive,
        default=0,
        help=f"stop after N messages (exit 1 if they do not come within --timeout, "
        f"default {COUNT_TIMEOUT:g} s)",
    )
    p.add_argument(
        "--timeout",
        "-t",
        type=float,
        default=None,
        help=f"stop after S seconds; 0: never (default: never, {COUNT_TIMEOUT:g} with --count)",
    )
    p.set_defaults(func=run_client(_listen))
