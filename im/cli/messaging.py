"""``imctl register``, ``send`` and ``listen``: one account, one message, a stream."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from im.cli.common import (
    default_device,
    event_json,
    make_client,
    password,
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
        print_problem({"error": "usage", "detail": "nothing to send (empty text)"})
        return 1
    async with make_client(args) as client:
        await client.login(args.user, password(args), args.device or default_device("send"))
        await client.connect(sync=False)  # sending needs no history
        if args.to is not None:
            ack = await client.send_to_user(args.to, text, args.content_type)
        else:
            ack = await client.send(args.conversation, text, args.content_type)
        print_json(
            {
                "client_msg_id": ack.client_msg_id,
                "msg_id": str(ack.msg_id),
                "server_ts": ack.server_ts,
                "conversation_id": ack.conversation_id,
            }
        )
    return 0


async def _listen(args: argparse.Namespace) -> int:
    async with make_client(args) as client:
        await client.login(args.user, password(args), args.device or default_device("listen"))
        received = 0
        try:
            # the total timeout covers connecting and syncing too
            async with asyncio.timeout(args.timeout):
                await client.connect()
                async for event in client.events():
                    print_json(event_json(event))
                    if isinstance(event, wire_pb2.Message):
                        received += 1
                        if args.count and received >= args.count:
                            return 0
        except TimeoutError:
            return 0
        print_problem({"error": "closed", "detail": client.close_reason or "closed"})
        return 1


def register(
    sub: argparse._SubParsersAction,
    gateway: argparse.ArgumentParser,
    account: argparse.ArgumentParser,
) -> None:
    p = sub.add_parser("register", parents=[gateway], help="create a user")
    p.add_argument("username")
    p.add_argument("--password", "-p", help="password (prompted if not given)")
    p.add_argument("--display-name")
    p.set_defaults(func=run_client(_register))

    p = sub.add_parser("send", parents=[account], help="send one message, print its SendAck")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", help="peer username or user id (1:1 conversation)")
    target.add_argument("--conversation", "-c", help="conversation id (d:... or g:...)")
    p.add_argument("--content-type", default="text/plain")
    p.add_argument("text", nargs="?", help="message text (default: read stdin)")
    p.set_defaults(func=run_client(_send))

    p = sub.add_parser("listen", parents=[account], help="sync, then print incoming messages")
    p.add_argument("--count", "-n", type=int, default=0, help="stop after N messages")
    p.add_argument("--timeout", "-t", type=float, default=None, help="stop after S seconds")
    p.set_defaults(func=run_client(_listen))
