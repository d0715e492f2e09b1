"""Links attachments to the conversations their owner sent them to, after the router
stored the messages: from then on the members of that conversation may download
them (the gateway checks the link).

Only messages that carry attachment_ids cost anything (no call for the others). A
link whose store fails is logged and counted, never a reason to fail the batch: the
message is stored and delivered, and its attachment stays readable by its owner only
until it is sent again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from im.ports import AttachmentLink, AttachmentStore
from im.v1 import wire_pb2

log = logging.getLogger("im.router")

LINK_TIMEOUT = 5.0


@dataclass(slots=True)
class LinkStats:
    linked: int = 0  # links recorded (the sender owned the attachment)
    refused: int = 0  # ids a sender referred to without owning them (or unknown)
    failures: int = 0  # link calls that failed or timed out


class AttachmentLinker:
    def __init__(self, store: AttachmentStore, timeout: float = LINK_TIMEOUT) -> None:
        self.store = store
        self.timeout = timeout
        self.stats = LinkStats()

    async def link(self, messages: list[wire_pb2.Message]) -> None:
        links = [
            AttachmentLink(attachment_id, m.conversation_id, m.seq, m.sender_id)
            for m in messages
            if m.attachment_ids
            for attachment_id in m.attachment_ids
        ]
        if not links:
            return
        try:
            linked = await asyncio.wait_for(self.store.link(links), self.timeout)
        except Exception as exc:
            self.stats.failures += 1
            log.warning("could not link %d attachment(s): %r", len(links), exc)
            return
        self.stats.linked += linked
        self.stats.refused += max(0, len(links) - linked)
