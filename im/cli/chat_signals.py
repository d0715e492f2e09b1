"""Typing and presence in ``imctl chat``: "(bob is typing…)" when a member starts
typing in the room, a 1:1 peer's online/offline with its last-seen time, and the
Typing frames this user's own editing sends (at most one per TYPING_REFRESH)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from im.cli.common import UserNames, clock_time, peer_of
from im.cli.screen import Screen
from im.client.errors import ApiError, ClientError
from im.clock import Clock, SystemClock
from im.v1 import wire_pb2

if TYPE_CHECKING:
    from im.client.session import ImClient

TYPING_REFRESH = 3.0  # seconds between Typing frames while the user keeps typing


def presence_note(who: str, online: bool, last_seen_ms: int | None) -> str:
    if online:
        return f"({who} is online)"
    if last_seen_ms:
        return f"({who} is offline, last seen {clock_time(last_seen_ms)})"
    return f"({who} is offline)"


class ChatSignals:
    def __init__(
        self,
        client: ImClient,
        conversation_id: str,
        names: UserNames,
        screen: Screen,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.conversation_id = conversation_id
        self.names = names
        self.screen = screen
        self.clock = clock or SystemClock()
        self.me = client.user_id
        self._typing_until: dict[int, float] = {}  # user -> when its shown STARTED ends
        self._last_sent = float("-inf")
        self._sending: asyncio.Task[None] | None = None

    async def show_presence(self) -> None:
        """Each other member's presence (the room's peer, in a 1:1), from REST."""
        try:
            members: list[dict[str, Any]] = await self.client.conversation_presence(
                self.conversation_id
            )
        except ApiError:
            return  # presence is a nicety: the chat goes on without it
        for m in members[:20]:
            who = await self.names.of(int(m["user_id"]))
            self.screen.show("  " + presence_note(who, bool(m["online"]), m.get("last_seen_ms")))

    async def on_typing(self, event: wire_pb2.Typing) -> None:
        if event.conversation_id != self.conversation_id or event.user_id == self.me:
            return
        now = self.clock.monotonic()
        if event.state != wire_pb2.TYPING_STATE_STARTED:
            self._typing_until.pop(event.user_id, None)
            return
        shown_until = self._typing_until.get(event.user_id, float("-inf"))
        self._typing_until[event.user_id] = now + event.expires_in_ms / 1000.0
        if shown_until <= now:  # a refresh of what is shown says nothing new
            who = await self.names.of(event.user_id)
            self.screen.show(f"  ({who} is typing…)")

    def on_message(self, message: wire_pb2.Message) -> None:
        self._typing_until.pop(message.sender_id, None)

    async def on_presence(self, event: wire_pb2.Presence) -> None:
        """Only the room's peer is shown (presence comes for every 1:1 peer)."""
        if peer_of(self.conversation_id, self.me) != event.user_id:
            return
        who = await self.names.of(event.user_id)
        self.screen.show("  " + presence_note(who, event.online, event.last_seen_ms))

    def edited(self) -> None:
        """The user changed the line being typed: tell the others, now and then."""
        now = self.clock.monotonic()
        if now - self._last_sent < TYPING_REFRESH:
            return
        if self._sending is not None and not self._sending.done():
            return
        self._last_sent = now
        self._sending = asyncio.get_running_loop().create_task(self.send_typing())

    async def send_typing(self) -> None:
        with contextlib.suppress(ClientError, OSError):
            await self.client.send_typing(self.conversation_id)

    def sent_line(self) -> None:
        """A line went out: the next keystroke starts a new STARTED at once."""
        self._last_sent = float("-inf")
