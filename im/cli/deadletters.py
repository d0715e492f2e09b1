"""``imctl dead-letters``: the bus records the routers set aside, for an operator.

It reads the message store named by the ``IM_*`` settings (like ``imctl db
upgrade``), not the gateway: dead letters are an operator's concern, not a client's.
Prints one JSON object per letter, newest first, with the record decoded where it
still decodes and its raw bytes (base64) where it does not.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from typing import Any

from google.protobuf.json_format import MessageToDict

from im.config import Settings
from im.ports import DeadLetter
from im.v1 import bus_pb2

# Which protobuf message each topic carries (by setting name).
_TOPIC_TYPES = {
    "topic_messages": bus_pb2.InboundMessage,
    "topic_cursors": bus_pb2.CursorReport,
    "topic_membership": bus_pb2.MembershipEvent,
}


def letter_json(letter: DeadLetter, settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {
        "letter_id": letter.letter_id,
        "at_ms": letter.at_ms,
        "reason": letter.reason,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "key": letter.key,
        "value_base64": base64.b64encode(letter.value).decode(),
    }
    for setting, kind in _TOPIC_TYPES.items():
        if getattr(settings, setting) == letter.topic:
            try:
                out["record"] = MessageToDict(kind.FromString(letter.value))
            except Exception:
                out["record"] = None  # undecodable: that may be why it is here
    return out


async def _list(settings: Settings, limit: int, before_ms: int | None) -> list[DeadLetter]:
    from im.adapters import build_message_store

    store = build_message_store(settings)
    try:
        return await store.dead_letters(limit, before_ms)  # type: ignore[attr-defined]
    finally:
        await store.close()


def cmd_dead_letters(args: argparse.Namespace) -> int:
    settings = Settings()
    letters = asyncio.run(_list(settings, args.limit, args.before))
    for letter in letters:
        print(json.dumps(letter_json(letter, settings)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dead-letters",
        help="list records the routers set aside (reads the store in the IM_* settings)",
    )
    p.add_argument("--limit", "-n", type=int, default=50, help="at most this many (newest first)")
    p.add_argument("--before", type=int, default=None, help="only letters older than this (ms)")
    p.set_defaults(func=cmd_dead_letters)
