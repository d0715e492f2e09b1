"""``imctl group rename|describe|avatar|transfer|dissolve|join|invite-link|requests``:
the group lifecycle from a shell. JSON lines on stdout, like the other group commands;
hooked in by ``im.cli.groups.register``."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from im.cli.common import print_json, run_client
from im.client.gateway import as_group_id

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from im.client.session import ImClient

    Body = Callable[[ImClient, argparse.Namespace], Awaitable[int]]

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> int:
    """Seconds from "90", "30m", "12h" or "7d"."""
    found = _DURATION.match(text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"not a duration (like 30m, 12h, 7d): {text}")
    return int(found.group(1)) * _UNITS[found.group(2)]


async def _member(client: ImClient, member: str) -> int:
    return await client.resolve_user(member)


async def _rename(client: ImClient, args: argparse.Namespace) -> int:
    print_json(await client.gateway.update_group(args.group, name=args.name))
    return 0


async def _describe(client: ImClient, args: argparse.Namespace) -> int:
    print_json(await client.gateway.update_group(args.group, description=args.text))
    return 0


async def _avatar(client: ImClient, args: argparse.Namespace) -> int:
    print_json(await client.gateway.update_group(args.group, avatar=args.avatar))
    return 0


async def _transfer(client: ImClient, args: argparse.Namespace) -> int:
    user_id = await _member(client, args.member)
    print_json(await client.gateway.transfer_group(args.group, user_id))
    return 0


async def _dissolve(client: ImClient, args: argparse.Namespace) -> int:
    print_json(await client.gateway.dissolve_group(args.group))
    return 0


async def _join(client: ImClient, args: argparse.Namespace) -> int:
    print_json(await client.gateway.join_group(args.token))
    return 0


async def _link_create(client: ImClient, args: argparse.Namespace) -> int:
    print_json(
        await client.gateway.create_invite(
            args.group, args.expires, args.max_uses, args.approval_required
        )
    )
    return 0


async def _link_list(client: ImClient, args: argparse.Namespace) -> int:
    for link in await client.gateway.invites(args.group):
        print_json(link)
    return 0


async def _link_revoke(client: ImClient, args: argparse.Namespace) -> int:
    print_json(await client.gateway.revoke_invite(args.group, args.link_id))
    return 0


async def _requests_list(client: ImClient, args: argparse.Namespace) -> int:
    for request in await client.gateway.join_requests(args.group):
        print_json(request)
    return 0


async def _decide(client: ImClient, args: argparse.Namespace, approve: bool) -> int:
    user_id = await _member(client, args.member)
    joined = await client.gateway.decide_join_request(args.group, user_id, approve)
    print_json({"conversation_id": as_group_id(args.group), "user_id": user_id, "joined": joined})
    return 0


async def _approve(client: ImClient, args: argparse.Namespace) -> int:
    return await _decide(client, args, True)


async def _reject(client: ImClient, args: argparse.Namespace) -> int:
    return await _decide(client, args, False)


def register(
    actions: argparse._SubParsersAction,
    account: argparse.ArgumentParser,
    with_client: Callable[[Body], Callable[[argparse.Namespace], Awaitable[int]]],
    group_help: str,
) -> None:
    """Add the lifecycle actions to ``imctl group``'s subparsers."""

    def action(
        parsers: argparse._SubParsersAction, name: str, body: Body, help_text: str
    ) -> argparse.ArgumentParser:
        a = parsers.add_parser(name, parents=[account], help=help_text)
        a.set_defaults(func=run_client(with_client(body)))
        return a

    a = action(actions, "rename", _rename, "rename a group (owner/admin)")
    a.add_argument("group", help=group_help)
    a.add_argument("name", help="the new name")

    a = action(actions, "describe", _describe, "set a group's description (owner/admin)")
    a.add_argument("group", help=group_help)
    a.add_argument("text", help='the description ("" removes it)')

    a = action(actions, "avatar", _avatar, "set a group's picture (owner/admin)")
    a.add_argument("group", help=group_help)
    a.add_argument("avatar", help='an https:// URL or an attachment id ("" removes it)')

    a = action(
        actions, "transfer", _transfer, "make a member the owner (owner); you become an admin"
    )
    a.add_argument("group", help=group_help)
    a.add_argument("member", help="username or user id of the new owner")

    a = action(
        actions,
        "dissolve",
        _dissolve,
        "dissolve a group (owner): no more messages or changes; history stays readable",
    )
    a.add_argument("group", help=group_help)

    a = action(actions, "join", _join, "join a group with an invite link's token")
    a.add_argument("token", help="the token from `imctl group invite-link create`")

    links = actions.add_parser("invite-link", help="create, list and revoke invite links")
    link_actions = links.add_subparsers(dest="link_command", metavar="ACTION", required=True)
    a = action(link_actions, "create", _link_create, "create an invite link (owner/admin)")
    a.add_argument("group", help=group_help)
    a.add_argument(
        "--expires", type=duration, default=7 * 86400, help="lifetime: 30m, 12h, 7d (default 7d)"
    )
    a.add_argument("--max-uses", type=int, default=0, help="joins allowed; 0 = unlimited")
    a.add_argument(
        "--approval-required",
        action="store_true",
        help="joining files a request an owner or admin approves",
    )
    a = action(link_actions, "list", _link_list, "print a group's invite links (owner/admin)")
    a.add_argument("group", help=group_help)
    a = action(link_actions, "revoke", _link_revoke, "revoke an invite link (owner/admin)")
    a.add_argument("group", help=group_help)
    a.add_argument("link_id", help="the link's link_id (not its token)")

    requests = actions.add_parser("requests", help="pending join requests: list, approve, reject")
    request_actions = requests.add_subparsers(
        dest="requests_command", metavar="ACTION", required=True
    )
    a = action(request_actions, "list", _requests_list, "print pending join requests")
    a.add_argument("group", help=group_help)
    for name, body in (("approve", _approve), ("reject", _reject)):
        a = action(request_actions, name, body, f"{name} a join request (owner/admin)")
        a.add_argument("group", help=group_help)
        a.add_argument("member", help="username or user id of the requester")
