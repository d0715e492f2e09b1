"""``imctl recall`` and ``imctl edit``: act on a message already sent. Each becomes an
event in the conversation (every member's devices get it, in order, like a message);
history then shows the message recalled, or with its new text and ``edited_at``."""

from __future__ import annotations

import argparse
import sys

from im.cli.common import (
    UsageError,
    account_parent,
    add_target,
    conversation_of,
    logged_in,
    print_json,
    run_client,
)


def _msg_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 1 << 63:
        raise argparse.ArgumentTypeError(f"not a msg_id: {text!r}")
    return int(text)


async def _recall(args: argparse.Namespace) -> int:
    async with logged_in(args, "recall") as client:
        conversation = await conversation_of(client, args)
        print_json(await client.recall(conversation, args.msg_id))
    return 0


async def _edit(args: argparse.Namespace) -> int:
    text = args.text if args.text is not None else sys.stdin.read().removesuffix("\n")
    if not text:
        raise UsageError("nothing to edit to (empty text); recall the message instead")
    async with logged_in(args, "edit") as client:
        conversation = await conversation_of(client, args)
        print_json(await client.edit(conversation, args.msg_id, text, args.client_msg_id))
    return 0


def register(sub: argparse._SubParsersAction, gateway: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "recall",
        parents=[account_parent(gateway, "recall")],
        help="recall a message, print the recall event",
        description="Recall a message (its msg_id, as send, listen and history print it) "
        "of a user's 1:1 conversation (--to), a conversation (-c) or a group (-g). Its "
        "sender may within the recall window (IM_RECALL_WINDOW_SECONDS, default 2 min); "
        "a group's owner and admins may recall any message of the group at any time. "
        "The text is erased on the server; chats show 'message recalled'. Safe to retry.",
    )
    add_target(p)
    p.add_argument("msg_id", type=_msg_id, help="the message's msg_id")
    p.set_defaults(func=run_client(_recall))

    p = sub.add_parser(
        "edit",
        parents=[account_parent(gateway, "edit")],
        help="edit one's own text message, print the edit event",
        description="Replace the text of one's own text message (within the edit window, "
        "IM_EDIT_WINDOW_SECONDS, default 15 min). Chats show it '(edited)'. With "
        "--client-msg-id, a retry with the same id is the same edit.",
    )
    add_target(p)
    p.add_argument("msg_id", type=_msg_id, help="the message's msg_id")
    p.add_argument("text", nargs="?", help="the new text (default: read stdin)")
    p.add_argument("--client-msg-id", help="idempotency key of this edit (1-64 characters)")
    p.set_defaults(func=run_client(_edit))
