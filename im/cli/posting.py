"""``imctl post`` and ``service-send``: server-side sends, without a socket.

``post`` logs in and sends over REST (``POST /v1/conversations/{id}/messages``);
``service-send`` is an internal service or bot: it sends in a user's name through the
gateway's internal gRPC MessageService with the suite's certificate (IM_INTERNAL_*,
else a standalone suite's dev set in IM_DATA_DIR)."""

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
    print_problem,
    run_client,
)


def _text(args: argparse.Namespace) -> str:
    text = args.text if args.text is not None else sys.stdin.read().removesuffix("\n")
    if not text:
        raise UsageError("nothing to send (empty text)")
    return text


async def _post(args: argparse.Namespace) -> int:
    text = _text(args)
    async with logged_in(args, "post") as client:
        conversation = await conversation_of(client, args)
        posted = await client.gateway.post_message(
            conversation,
            text,
            content_type=args.content_type,
            client_msg_id=args.client_msg_id,
        )
    print_json(
        {
            "client_msg_id": posted.client_msg_id,
            "msg_id": str(posted.msg_id),
            "server_ts": posted.server_ts,
            "conversation_id": posted.conversation_id,
        }
    )
    return 0


async def _service_send(args: argparse.Namespace) -> int:
    import grpc

    from im.client.service_send import ServiceSender
    from im.config import Settings

    text = _text(args)
    try:
        sender = ServiceSender.from_settings(Settings(), args.grpc or "")
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    async with sender:
        try:
            sent = await sender.send(
                args.sender,
                args.conversation,
                text,
                content_type=args.content_type,
                client_msg_id=args.client_msg_id,
                sender_device=args.device or "",
            )
        except grpc.aio.AioRpcError as exc:
            print_problem({"error": exc.code().name.lower(), "detail": exc.details() or ""})
            return 1
    print_json(
        {
            "msg_id": str(sent.msg_id),
            "server_ts": sent.server_ts,
            "conversation_id": sent.conversation_id,
        }
    )
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--content-type", default="text/plain", help="default: text/plain")
    p.add_argument(
        "--client-msg-id",
        help="idempotency key (default: a new UUID); run again with the same one after a "
        "failure and the message is stored once",
    )
    p.add_argument("text", nargs="?", help="message text (default: read stdin)")


def register(sub: argparse._SubParsersAction, gateway: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "post",
        parents=[account_parent(gateway, "post")],
        help="send one message over REST (no socket), print its msg_id",
        description="Send one message over REST (POST /v1/conversations/{id}/messages), "
        "without opening a socket: to a user (--to), a conversation (-c) or a group (-g). "
        "Prints msg_id (a decimal string), server_ts and conversation_id as JSON.",
    )
    add_target(p)
    _common(p)
    p.set_defaults(func=run_client(_post))

    p = sub.add_parser(
        "service-send",
        help="send as a user through the gateway's internal gRPC (services, bots)",
        description="An internal service or bot sending in a user's name: "
        "MessageService.Send on the gateway's internal gRPC port, with the suite's "
        "certificate (IM_INTERNAL_CA_FILE, IM_INTERNAL_CERT_FILE, IM_INTERNAL_KEY_FILE; "
        "else the dev set of the standalone suite in IM_DATA_DIR). The sender must be a "
        "member of the conversation.",
    )
    p.add_argument("--as", dest="sender", type=int, required=True, metavar="USER_ID")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--conversation", "-c", metavar="ID", help="d:<a>:<b> or g:<n>")
    target.add_argument(
        "--group", "-g", dest="conversation", metavar="GROUP", type=_group, help="g:<n> or n"
    )
    p.add_argument(
        "--grpc",
        metavar="HOST:PORT",
        help="the gateway's gRPC address (default: IM_INTERNAL_HOST:IM_GATEWAY_GRPC_PORT)",
    )
    p.add_argument("--device", "-d", help="the message's sender_device (default: server)")
    _common(p)
    p.set_defaults(func=run_client(_service_send))


def _group(text: str) -> str:
    from im.client.gateway import as_group_id

    return as_group_id(text)
