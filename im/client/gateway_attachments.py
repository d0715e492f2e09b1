"""Attachment REST calls, mixed into ``GatewayClient``; the streaming itself is in
im/client/attachments.py."""

from __future__ import annotations

import os
from typing import Any

from im.client import attachments
from im.client.gateway_http import GatewayCalls


class AttachmentCalls(GatewayCalls):
    """Uploads and downloads stream both ways: a file is never held in memory whole."""

    async def upload_file(
        self, path: str | os.PathLike[str], content_type: str | None = None
    ) -> dict[str, Any]:
        """Upload a file: ``{attachment_id, size, sha256, content_type, filename, ...}``;
        the type is guessed from the name unless given."""
        return await attachments.upload_file(self, path, content_type)

    async def upload_bytes(
        self, data: bytes, filename: str, content_type: str | None = None
    ) -> dict[str, Any]:
        return await attachments.upload_bytes(self, data, filename, content_type)

    async def attachment_limits(self) -> dict[str, Any]:
        """``{max_bytes, content_types, max_per_message}``."""
        return await attachments.limits(self)

    async def attachment(self, attachment_id: str) -> dict[str, Any]:
        """An attachment's metadata (owner or member of a conversation it was sent to)."""
        return await attachments.metadata(self, attachment_id)

    async def download(self, attachment_id: str) -> bytes:
        return await attachments.download(self, attachment_id)

    async def download_to(self, attachment_id: str, path: str | os.PathLike[str]) -> int:
        """Stream an attachment into a file; returns the bytes written."""
        return await attachments.download_to(self, attachment_id, path)
