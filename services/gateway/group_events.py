"""System events of a group: each membership or group change becomes a message of a
reserved content type (``im.events.GROUP_*``) in the group's seq stream, sent through
the server-side send path, so every device shows the changes in order with the chat.

An event is sent after its change is committed: an added member is already in the
member list (the router revalidates it per batch), and joined after a seq the event
comes after, so it sees the event; a removed member is gone, so it sees neither the
event nor anything later. The client_msg_id is the group's change_version (with the
server's prefix, which clients may not use), so a retried event is stored once."""

from __future__ import annotations

import json
import logging
from typing import Any

from im.sending import ServerSender, server_client_msg_id
from im.v1 import wire_pb2

log = logging.getLogger("im.gateway")

EVENT_DEVICE = "server"
SEND_ATTEMPTS = 3
MAX_EVENT_USER_IDS = 100


def event_client_msg_id(group_id: str, change_version: int, part: str = "") -> str:
    # The idempotency key is (sender, client_msg_id): the group id keeps two groups'
    # change numbers apart; ``part`` the several events of one change. The server's
    # prefix keeps a member from taking the key of the next change's event first.
    return server_client_msg_id(group_id, "ev", change_version, *([part] if part else []))


class GroupEvents:
    def __init__(self, sender: ServerSender) -> None:
        self._sender = sender

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
        event. The change is committed already: a bus that stays down after a few
        tries loses the event (logged) rather than failing the request."""
        if not change_version:
            return
        fields = {"actor_id": fields.pop("actor_id", sender_id), **fields}
        user_ids = fields.get("user_ids")
        if isinstance(user_ids, list) and len(user_ids) > MAX_EVENT_USER_IDS:
            # Thousands added at once: the event names the first ones and the count
            # (the member list has them all), so its body stays small.
            fields["user_ids"], fields["count"] = user_ids[:MAX_EVENT_USER_IDS], len(user_ids)
        message = wire_pb2.Message(
            conversation_id=group_id,
            sender_id=sender_id,
            sender_device=EVENT_DEVICE,
            client_msg_id=event_client_msg_id(group_id, change_version, part),
            content_type=content_type,
            body=json.dumps(fields, separators=(",", ":")).encode(),
        )
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                await self._sender.send(message)
                return
            except Exception as exc:
                if attempt == SEND_ATTEMPTS:
                    log.error(
                        "group event %s of %s (version %d) lost: %r",
                        content_type,
                        group_id,
                        change_version,
                        exc,
                    )
                    return
                log.warning("group event %s of %s: retrying (%r)", content_type, group_id, exc)
