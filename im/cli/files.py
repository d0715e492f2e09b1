"""``imctl send-file`` and ``download``: attachments from a shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from im.cli.common import (
    UsageError,
    account_parent,
    add_target,
    conversation_of,
    logged_in,
    print_json,
    run_client,
)


async def _send_file(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():  # noqa: ASYNC240 (before anything starts: nothing waits)
        raise UsageError(f"{path}: not a file")
    async with logged_in(args, "send-file") as client:
        conversation = await conversation_of(client, args)
        upload = await client.gateway.upload_file(path, args.content_type)
        await client.connect(sync=False)  # sending needs no history
        ack = await client.send(
            conversation, args.text or "", attachment_ids=[upload["attachment_id"]]
        )
        print_json(
            {
                "attachment": upload,
                "msg_id": str(ack.msg_id),
                "server_ts": ack.server_ts,
                "conversation_id": ack.conversation_id,
            }
        )
    return 0


async def _download(args: argparse.Namespace) -> int:
    async with logged_in(args, "download") as client:
        meta = await client.gateway.attachment(args.attachment_id)
        if args.path == "-":
            sys.stdout.buffer.write(await client.gateway.download(args.attachment_id))
            sys.stdout.buffer.flush()
            return 0
        target = Path(args.path) if args.path else Path(meta["filename"])
        if target.is_dir():
            target = target / meta["filename"]
        if target.exists() and not args.force:
            raise UsageError(f"{target} exists (--force to overwrite)")
        written = await client.gateway.download_to(args.attachment_id, target)
        print_json({"path": str(target), "size": written, "sha256": meta["sha256"]})
    return 0


def register(sub: argparse._SubParsersAction, gateway: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "send-file",
        parents=[account_parent(gateway, "send-file")],
        help="upload a file and send it in a message",
        description="Upload PATH (streamed; the gateway's IM_MAX_ATTACHMENT_BYTES and "
        "IM_ATTACHMENT_CONTENT_TYPES apply), then send a message referring to it to a user "
        "(--to), a conversation (-c) or a group (-g). Its members may then download it "
        "(`imctl download ID`). Prints the attachment and the SendAck as JSON.",
    )
    add_target(p)
    p.add_argument("path", help="the file to send")
    p.add_argument("--text", "-m", default="", help="message text beside the file")
    p.add_argument("--content-type", help="the file's media type (default: guessed from its name)")
    p.set_defaults(func=run_client(_send_file))

    p = sub.add_parser(
        "download",
        parents=[account_parent(gateway, "download")],
        help="download an attachment",
        description="Download attachment ID (yours, or sent to a conversation you are in) "
        "into PATH: a file, a folder (the attachment's name in it), `-` for stdout; "
        "default: its name in the current folder. Prints path, size and sha256 as JSON.",
    )
    p.add_argument("attachment_id", help="the id from the message's attachment_ids")
    p.add_argument("path", nargs="?", help="where to write it (default: its file name)")
    p.add_argument("--force", "-f", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=run_client(_download))
