"""``imctl conv-settings``: your own settings of a conversation (mute, pin, archive,
your name for it), over REST. Your other online devices are told at once."""

from __future__ import annotations

import argparse
import re
from typing import Any

from im.cli.common import (
    UsageError,
    account_parent,
    add_target,
    conversation_of,
    logged_in,
    print_json,
    run_client,
)

FOREVER = "forever"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+)([smhdw])$")


def mute_seconds(text: str) -> int | None:
    """``90s``, ``30m``, ``8h``, ``7d``, ``2w`` -> seconds; ``forever`` -> None."""
    if text == FOREVER:
        return None
    found = _DURATION.match(text.strip().lower())
    if found is None or int(found.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (e.g. 30m, 8h, 7d, 2w, or {FOREVER})"
        )
    return int(found.group(1)) * _UNITS[found.group(2)]


def _mute(text: str) -> int | str:
    seconds = mute_seconds(text)
    return FOREVER if seconds is None else seconds


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.unmute:
        changes["muted_until"] = 0
    elif args.mute is not None:
        seconds = args.mute
        if seconds == FOREVER:
            changes["muted_until"] = -1
        else:
            changes["mute_for_seconds"] = seconds
    if args.pin is not None:
        changes["pinned"] = args.pin
    if args.archive is not None:
        changes["archived"] = args.archive
    if args.name is not None:
        changes["name"] = args.name
    return changes


async def _conv_settings(args: argparse.Namespace) -> int:
    changes = _changes(args)
    if not changes:
        raise UsageError(
            "nothing to change: give --mute/--unmute, --pin/--unpin, "
            "--archive/--unarchive or --name"
        )
    async with logged_in(args, "conv-settings") as client:
        cid = await conversation_of(client, args)
        stored = await client.gateway.update_settings(cid, **changes)
        print_json({"conversation_id": cid, **stored})
    return 0


def register(sub: argparse._SubParsersAction, gateway: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "conv-settings",
        parents=[account_parent(gateway, "conv-settings")],
        help="mute, pin, archive or name a conversation (for you only)",
        description="Change your own settings of a conversation; only what you name "
        "changes. A muted conversation gets no push notifications; pinned ones come "
        "first in `imctl conversations`. Prints the settings now in force as one JSON "
        "line; your other online devices are told at once.",
    )
    add_target(p)
    mute = p.add_mutually_exclusive_group()
    mute.add_argument(
        "--mute",
        metavar="DURATION",
        type=_mute,
        help=f"mute for a while (30m, 8h, 7d, 2w) or `{FOREVER}`",
    )
    mute.add_argument("--unmute", action="store_true", help="end a mute")
    pin = p.add_mutually_exclusive_group()
    pin.add_argument("--pin", dest="pin", action="store_true", default=None, help="pin it")
    pin.add_argument("--unpin", dest="pin", action="store_false", help="unpin it")
    archive = p.add_mutually_exclusive_group()
    archive.add_argument(
        "--archive", dest="archive", action="store_true", default=None, help="archive it"
    )
    archive.add_argument("--unarchive", dest="archive", action="store_false", help="unarchive it")
    p.add_argument("--name", help='your own name for it (at most 64 characters; "" clears)')
    p.set_defaults(func=run_client(_conv_settings))
