"""System events of a group: each membership or group change becomes a message of a
reserved content type (``im.events.GROUP_*``) in the group's seq stream, sent through
the server-side send path, so every device shows the changes in order with the chat.

An event is sent after its change is committed: an added member is already in the
member list (the router revalidates it per batch), and joined after a seq the event
comes after, so it sees the event; a removed member is gone, so it sees neither the
event nor anything later. The client_msg_id is the group's change_version (with the
server's prefix, which clients may not use), so a retried event is stored once.

When the bus stays down past a few quick tries, the request still succeeds (its change
is committed) and the event waits in this gateway's memory, retried with backoff until
the bus takes it; a group's later events queue behind it, so they keep their order.
Only a restart of this gateway, or more than MAX_PENDING events waiting, loses one
(logged)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any

from im.clock import Clock, SystemClock
from im.sending import ServerSender, server_client_msg_id
from im.v1 import wire_pb2

log = logging.getLogger("im.gateway")

EVENT_DEVICE = "server"
SEND_ATTEMPTS = 3  # quick tries within the request
MAX_PENDING = 10_000  # events waiting for the bus, all groups together
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0
MAX_EVENT_USER_IDS = 100


def event_client_msg_id(group_id: str, change_version: int, part: str = "") -> str:
    # The idempotency key is (sender, client_msg_id): the group id keeps two groups'
    # change numbers apart; ``part`` the several events of one change. The server's
    # prefix keeps a member from taking the key of the next change's event first.
    return server_client_msg_id(group_id, "ev", change_version, *([part] if part else []))


class GroupEvents:
    def __init__(
        self, sender: ServerSender, clock: Clock | None = None, max_pending: int = MAX_PENDING
    ) -> None:
        self._sender = sender
        self.clock = clock or SystemClock()  # its backoff (tests set a FakeClock)
        self._max_pending = max_pending
        # group -> its events the bus has not taken yet, oldest first
        self._pending: dict[str, deque[wire_pb2.Message]] = {}
        self.pending = 0  # how many wait, all groups together
        self._retrying: asyncio.Task[None] | None = None

    async def emit(
        self,
        group_id: str,
        sender_id: int,
        content_type: str,
        change_version: int,
        part: str = "",
        **fields: Any,
    ) -> None:
        """Sends one event; ``fields`` go into its JSON body besides ``actor_id``
        (the sender unless given). A change that changed nothing (version 0) has no
        event. The change is committed already: a bus that stays down past a few tries
        does not fail the request; the event waits (see the module's doc)."""
        if not change_version:
            return
        message = _event(group_id, sender_id, content_type, change_version, part, fields)
        if group_id in self._pending:  # earlier events of the group wait: behind them
            self._wait(message)
            return
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                await self._sender.send(message)
                return
            except Exception as exc:
                log.warning(
                    "group event %s of %s (version %d), try %d: %r",
                    content_type,
                    group_id,
                    change_version,
                    attempt,
                    exc,
                )
        self._wait(message)

    async def close(self) -> None:
        """Stops retrying; what still waits is lost (logged)."""
        if self._retrying is not None:
            self._retrying.cancel()
            await asyncio.gather(self._retrying, return_exceptions=True)
            self._retrying = None
        if self._pending:
            log.error(
                "%d group events lost: the gateway stops before the bus took them", self.pending
            )

    def _wait(self, message: wire_pb2.Message) -> None:
        if self.pending >= self._max_pending:
            log.error(
                "group event %s of %s lost: %d events already wait for the bus",
                message.content_type,
                message.conversation_id,
                self.pending,
            )
            return
        self._pending.setdefault(message.conversation_id, deque()).append(message)
        self.pending += 1
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.create_task(self._retry())

    async def _retry(self) -> None:
        """Sends the waiting events, each group's in order, backing off while the bus
        refuses; ends when none waits."""
        delay = RETRY_FIRST_SECONDS
        while self._pending:
            await self.clock.sleep(delay)
            sent = await self._send_waiting()
            delay = RETRY_FIRST_SECONDS if sent else min(delay * 2, RETRY_MAX_SECONDS)
            if sent:
                log.info("%d waiting group events sent; %d still wait", sent, self.pending)

    async def _send_waiting(self) -> int:
        """Sends as much as the bus takes now; returns how many went."""
        sent = 0
        for group_id in list(self._pending):
            queue = self._pending[group_id]
            while queue:
                try:
                    await self._sender.send(queue[0])
                except Exception as exc:
                    log.warning("waiting group events: the bus still refuses (%r)", exc)
                    return sent
                queue.popleft()
                self.pending -= 1
                sent += 1
            del self._pending[group_id]
        return sent


def _event(
    group_id: str,
    sender_id: int,
    content_type: str,
    change_version: int,
    part: str,
    fields: dict[str, Any],
) -> wire_pb2.Message:
    fields = {"actor_id": fields.pop("actor_id", sender_id), **fields}
    user_ids = fields.get("user_ids")
    if isinstance(user_ids, list) and len(user_ids) > MAX_EVENT_USER_IDS:
        # Thousands added at once: the event names the first ones and the count (the
        # member list has them all), so its body stays small.
        fields["user_ids"], fields["count"] = user_ids[:MAX_EVENT_USER_IDS], len(user_ids)
    return wire_pb2.Message(
        conversation_id=group_id,
        sender_id=sender_id,
        sender_device=EVENT_DEVICE,
        client_msg_id=event_client_msg_id(group_id, change_version, part),
        content_type=content_type,
        body=json.dumps(fields, separators=(",", ":")).encode(),
    )
