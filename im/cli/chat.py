"""``imctl chat``: an interactive chat with a user (``--to``) or in a group (``-g``).

It opens with the last messages of the conversation, then shows each message once as
``[time] #seq name: text`` (your own lines too, when the suite has numbered them), read
receipts, and messages of other conversations marked with theirs. It stays: when the
connector drains or the connection drops it logs in again and catches up
(im/client/reconnect.py); a line typed meanwhile is sent once it is back, under one
client_msg_id (stored once whatever happens).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from im import events
from im.cli.chat_signals import ChatSignals
from im.cli.common import (
    UsageError,
    UserNames,
    account_parent,
    add_target,
    check_not_self,
    clock_time,
    conversation_of,
    logged_in,
    peer_of,
    print_problem,
    run_client,
)
from im.cli.screen import Screen, make_screen
from im.client.errors import ApiError, ClientError, ConnectionClosed, SendError, kick_reason_name
from im.client.events import EDIT, RECALL, is_event
from im.client.group_events import describe, mentioned_user_ids
from im.client.reconnect import Reconnected, Reconnecting
from im.v1 import wire_pb2

if TYPE_CHECKING:
    from im.client.session import ImClient

HISTORY = 20  # messages shown when the chat opens
SEND_WAIT = 60.0  # seconds a line typed while offline waits for the connection
HINT = "(Enter sends the line; /help for commands; /quit or Ctrl-D leaves)"
HELP = (
    "(/history [N]: the last N messages again; /members: the group's members; /presence: "
    "who is online; /typing: tell the others you are typing; /quit or Ctrl-D: leave; a "
    "line that starts with // is sent with one / less)"
)


@dataclass
class Room:
    conversation_id: str
    title: str
    kind: str
    last_seq: int
    read_seq: int
    titles: dict[str, str] = field(default_factory=dict)  # other conversations
    unread_elsewhere: list[tuple[str, int]] = field(default_factory=list)


async def open_room(client: ImClient, args: argparse.Namespace, names: UserNames) -> Room:
    """The conversation --to/-c/-g names, as this user sees it (a 1:1 is created on
    first use), and the titles and unread counts of the others."""
    cid = await conversation_of(client, args)
    conversations = await client.gateway.conversations()
    if args.to is not None:
        peer = peer_of(cid, client.user_id)
        assert peer is not None
        conversations.append(await client.gateway.direct_conversation(peer))
    titles: dict[str, str] = {}
    unread: list[tuple[str, int]] = []
    mine: dict[str, Any] | None = None
    for conv in conversations:
        title = await _title(conv, client.user_id, names)
        titles[conv["conversation_id"]] = title
        if conv["conversation_id"] == cid:
            mine = conv
        elif int(conv.get("unread") or 0) > 0:
            unread.append((title, int(conv["unread"])))
    if mine is None:
        raise UsageError(f"{cid} is not a conversation of {args.user} (imctl conversations)")
    return Room(
        cid,
        titles[cid],
        str(mine.get("kind") or ""),
        int(mine.get("last_seq") or 0),
        int(mine.get("read_seq") or 0),
        titles,
        unread,
    )


async def _title(conv: dict[str, Any], me: int, names: UserNames) -> str:
    peer = conv.get("peer_id") or peer_of(conv["conversation_id"], me)
    if conv.get("kind") != "group" and peer:
        return "@" + await names.of(int(peer))
    return str(conv.get("name") or conv["conversation_id"])


def offline_note(event: Reconnecting) -> str:
    reason = event.reason
    if "unreachable" in reason:
        reason = "gateway unreachable"
    elif reason.startswith("kicked: RECONNECT"):
        reason = "the connector is draining"
    elif len(reason) > 80:
        reason = reason[:77] + "..."
    state = "offline" if event.attempt == 1 else "still offline"
    return f"{state}: {reason}; reconnecting in {event.delay:.1f} s"


class Chat:
    def __init__(self, client: ImClient, room: Room, names: UserNames, screen: Screen) -> None:
        self.client = client
        self.room = room
        self.names = names
        self.screen = screen
        self.me = client.user_id
        self.shown: dict[str, int] = {}  # highest seq shown, per conversation
        self.seqs: dict[int, int] = {}  # msg_id -> seq of the messages shown
        self.online = asyncio.Event()
        self.outbox: asyncio.Queue[str] = asyncio.Queue()
        self.signals = ChatSignals(client, room.conversation_id, names, screen)

    # ----------------------------------------------------------------- showing

    async def line_of(self, message: wire_pb2.Message) -> str:
        cid = message.conversation_id
        where = f"#{message.seq}"
        if cid != self.room.conversation_id:
            where = f"[{await self.title_of(cid)} #{message.seq}]"
        if events.is_group_event(message.content_type):
            # A change of the group, e.g. "alice added bob": a line of its own.
            ids = mentioned_user_ids(message.body)
            names = dict(zip(ids, await self.names.all(ids), strict=True))
            line = describe(message.content_type, message.body, names.get)
            return f"[{clock_time(message.server_ts)}] {where} * {line}"
        who = await self.names.of(message.sender_id)
        if is_event(message):
            return f"  ({who} {self.event_note(message)})"
        self.seqs[message.msg_id] = message.seq
        if message.recalled:
            text = "(message recalled)"
        elif message.content_type.startswith("text/"):
            text = message.body.decode("utf-8", errors="replace")
            text += " (edited)" if message.edited_at else ""
        else:
            text = f"({message.content_type}, {len(message.body)} bytes)"
        return f"[{clock_time(message.server_ts)}] {where} {who}: {text}"

    def event_note(self, event: wire_pb2.Message) -> str:
        """A recall or edit, told after the line it changes (lines already shown stay)."""
        seq = self.seqs.get(event.refers_to)
        target = f"#{seq}" if seq else "an earlier message"
        if event.content_type == RECALL:
            return f"recalled {target}: message recalled"
        if event.content_type == EDIT and event.body:
            return f"edited {target}: {event.body.decode('utf-8', errors='replace')} (edited)"
        return f"edited {target}"

    async def title_of(self, cid: str) -> str:
        if cid not in self.room.titles:
            peer = peer_of(cid, self.me)
            self.room.titles[cid] = "@" + await self.names.of(peer) if peer else cid
        return self.room.titles[cid]

    async def show_message(self, message: wire_pb2.Message) -> None:
        cid = message.conversation_id
        if message.seq <= self.shown.get(cid, 0):
            return  # shown from history already
        self.shown[cid] = message.seq
        self.screen.show(await self.line_of(message))
        if cid == self.room.conversation_id and message.sender_id != self.me:
            with contextlib.suppress(ClientError):
                await self.client.read(cid, message.seq)

    async def show_history(self, count: int) -> int:
        """The last ``count`` messages of the room; the highest seq shown."""
        cid = self.room.conversation_id
        last = max(self.room.last_seq, self.shown.get(cid, 0))
        page = await self.client.gateway.history(cid, max(0, last - count), count)
        for message in page.messages:
            self.screen.show(await self.line_of(message))
        top = max((m.seq for m in page.messages), default=0)
        self.shown[cid] = max(self.shown.get(cid, 0), top)
        return top

    async def opening(self) -> None:
        room = self.room
        me = await self.names.of(self.me)
        self.screen.show(f"chat in {room.title} ({room.conversation_id}), as {me}")
        top = await self.show_history(HISTORY)
        if room.last_seq > HISTORY:
            self.screen.show(f"(earlier messages: /history N; {room.last_seq} in all)")
        if top > room.read_seq:
            with contextlib.suppress(ApiError):
                await self.client.gateway.read(room.conversation_id, top)
        if room.unread_elsewhere:
            counts = ", ".join(f"{title} {n}" for title, n in room.unread_elsewhere)
            self.screen.show(f"(unread elsewhere: {counts}; imctl conversations)")
        if room.kind != "group":
            await self.signals.show_presence()
        self.screen.show(HINT)
        self.client.follow(room.conversation_id, top)  # live ones after a gap pull it

    async def show_events(self) -> None:
        async for event in self.client.events():
            if isinstance(event, wire_pb2.Message):
                self.signals.on_message(event)
                await self.show_message(event)
            elif isinstance(event, wire_pb2.Typing):
                await self.signals.on_typing(event)
            elif isinstance(event, wire_pb2.Presence):
                await self.signals.on_presence(event)
            elif isinstance(event, wire_pb2.Error):
                self.screen.show(f"  (refused: {event.message})")
            elif isinstance(event, wire_pb2.Receipt):
                if event.conversation_id == self.room.conversation_id and (
                    event.reader_id != self.me
                ):
                    who = await self.names.of(event.reader_id)
                    self.screen.show(f"  ({who} read up to #{event.read_seq})")
            elif isinstance(event, wire_pb2.Kick):
                if event.reason != wire_pb2.KICK_REASON_RECONNECT:  # that one: see below
                    self.screen.show(f"  (kicked: {kick_reason_name(event.reason)})")
            elif isinstance(event, Reconnecting):
                self.online.clear()
                self.screen.show(f"  ({offline_note(event)})")
            elif isinstance(event, Reconnected):
                self.online.set()
                self.screen.show("  (reconnected)")

    # ----------------------------------------------------------------- sending

    async def read_lines(self) -> None:
        async for line in self.screen.lines():
            text = line.rstrip("\r")
            if text.startswith("//"):
                text = text[1:]
            elif text.startswith("/"):
                if not await self.command(text):
                    return
                continue
            if text.strip():
                self.signals.sent_line()
                self.outbox.put_nowait(text)

    async def command(self, text: str) -> bool:
        """Run a /command; False to leave."""
        name, _, rest = text.partition(" ")
        if name in ("/quit", "/exit"):
            return False
        if name == "/history":
            count = int(rest) if rest.strip().isdigit() else HISTORY
            await self.show_history(max(1, min(count, 500)))
        elif name == "/members" and self.room.kind == "group":
            async for member in self.client.gateway.members_all(self.room.conversation_id):
                who = await self.names.of(int(member["user_id"]))
                self.screen.show(f"  {who} ({member['role']})")
        elif name == "/presence":
            await self.signals.show_presence()
        elif name == "/typing":
            await self.signals.send_typing()
        else:
            self.screen.show(HELP)
        return True

    async def send_lines(self) -> None:
        while True:
            text = await self.outbox.get()
            try:
                await self.send(text)
            finally:
                self.outbox.task_done()

    async def send(self, text: str) -> None:
        """Send once it is connected; retried after a reconnect under the same
        client_msg_id, so it is stored once whatever happened to the first try."""
        cmid = str(uuid.uuid4())
        while True:
            try:
                async with asyncio.timeout(SEND_WAIT):
                    await self.online.wait()
            except TimeoutError:
                self.screen.show(f"  (not sent, still offline: {text})")
                return
            try:
                await self.client.send(self.room.conversation_id, text, client_msg_id=cmid)
                return
            except ConnectionClosed:
                if not self.client.connected:
                    self.online.clear()  # Reconnected sets it again
            except SendError as exc:
                self.screen.show(f"  (not sent: {exc.code_name}: {exc.message}: {text})")
                return

    # ----------------------------------------------------------------- running

    async def run(self) -> int:
        with self.screen.session():
            await self.opening()
            await self.client.connect(sync=False)  # the room's backlog was just shown
            on_edit = getattr(self.screen, "on_edit", None)
            if on_edit is not None:
                on_edit(self.signals.edited)  # keystrokes send Typing (a terminal only)
            self.online.set()
            shower = asyncio.create_task(self.show_events())
            sender = asyncio.create_task(self.send_lines())
            typer = asyncio.create_task(self.read_lines())
            try:
                done, _ = await asyncio.wait({shower, typer}, return_when=asyncio.FIRST_COMPLETED)
                if typer in done:
                    typer.result()
                    # what was typed (or piped) before the end still goes out
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(SEND_WAIT):
                            await self.outbox.join()
                else:
                    shower.result()  # the stream ended for good (or failed)
            finally:
                for task in (shower, sender, typer):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if typer not in done:
            print_problem({"error": "closed", "detail": self.client.close_reason or "closed"})
            return 1
        return 0


async def _chat(args: argparse.Namespace) -> int:
    check_not_self(args)  # before logging in: a login would replace a session
    target = args.to if args.to is not None else args.conversation
    async with logged_in(args, "chat", target, reconnect=True) as client:
        names = UserNames(client)
        names.know(client.user_id, args.user)
        room = await open_room(client, args, names)
        screen = make_screen(f"{args.user}> ")
        return await Chat(client, room, names, screen).run()


def register(sub: argparse._SubParsersAction, gateway: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "chat",
        parents=[account_parent(gateway, "chat")],
        help="interactive chat with a user or in a group",
        description="Chat with a user (--to) or in a group (-g, or -c for any "
        "conversation id). Opens with the last messages, then shows each one as "
        "[time] #seq name: text, your own too; receipts as (name read up to #N); "
        "messages of other conversations with their name; (name is typing…) while a member "
        "types, and a 1:1 peer's online/offline with the last-seen time; your own typing "
        "is sent as you type. Reconnects by itself. " + HELP,
    )
    add_target(p)
    p.set_defaults(func=run_client(_chat))
