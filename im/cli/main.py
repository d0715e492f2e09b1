"""``imctl``: run the suite (standalone or one service) and talk to it from a shell.

Client commands print JSON lines on stdout (one per result/message) and problems as a
JSON object on stderr with exit status 1, so they compose with ``jq`` and scripts.
The commands live by group: ``servers`` (standalone, serve, cluster, db, config-doc,
bench, with ``deadletters`` and ``certs``), ``messaging`` (register, send, listen),
``editing`` (recall, edit), ``posting`` (post, service-send: sends without a socket),
``files`` (send-file, download), ``chat``, ``conversations`` (conversations, history,
read), ``presence`` (presence, presence-visibility), ``privacy`` (block, unblock,
blocks, privacy), ``search``, ``conv_settings`` (conv-settings),
``account`` (whoami, logout), ``groups`` (group ...,
receipts), ``admin`` (admin ...: operators).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from im.cli.common import DEFAULT_GATEWAY, account_parent, gateway_parent


def package_version() -> str:
    try:
        return version("im-suite")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    gateway_default = os.environ.get("IM_GATEWAY_URL") or DEFAULT_GATEWAY
    parser = argparse.ArgumentParser(
        prog="imctl",
        description="IM suite command line: run the suite, and use it from a shell.",
        epilog="Client commands print JSON lines on stdout and problems as one JSON object "
        "on stderr (exit status 1). `imctl COMMAND --help` tells more.",
    )
    parser.add_argument("--version", action="version", version=f"imctl {package_version()}")
    parser.add_argument(
        "--gateway",
        default=gateway_default,
        help=f"gateway base URL (env IM_GATEWAY_URL, default {DEFAULT_GATEWAY})",
    )
    parser.add_argument(
        "--ca-file",
        default=os.environ.get("IM_CA_FILE") or None,
        help="CA certificate to trust for a TLS gateway/connector (env IM_CA_FILE)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    gateway = gateway_parent()

    from im.cli import (
        account,
        admin,
        chat,
        conv_settings,
        conversations,
        editing,
        files,
        groups,
        messaging,
        posting,
        presence,
        privacy,
        search,
        servers,
    )

    servers.register(sub)
    messaging.register(sub, gateway)  # register, send, listen
    editing.register(sub, gateway)  # recall, edit
    posting.register(sub, gateway)  # post (REST), service-send (internal gRPC)
    files.register(sub, gateway)  # send-file, download
    chat.register(sub, gateway)
    conversations.register(sub, gateway)  # conversations, history, read
    search.register(sub, gateway)
    presence.register(sub, gateway)  # presence, presence-visibility
    conv_settings.register(sub, gateway)  # conv-settings
    account.register(sub, gateway)  # whoami, logout
    privacy.register(sub, gateway)  # block, unblock, blocks, privacy
    groups.register(sub, account_parent(gateway, "group"))  # group ..., receipts
    admin.register(sub, gateway)  # admin ... (operators, with an admin token)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
