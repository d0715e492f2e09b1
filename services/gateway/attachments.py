"""Attachments as one user sees them: uploading a file (streamed into the attachment
store, counted and hashed on the way, refused past the size limit), and reading one,
which only its owner and the members of a conversation it was sent to may do.

Who may read: the owner, always; anyone else only as a member of a conversation
where a message of the owner referring to it is stored (the router records that
link), only if that member may see that message (its seq is after the member's
``joined_seq``: a group created with ``history_visible`` shows it to later members,
others do not), and only while that message still carries it (a recall erases a
message's attachments: the message store says so, in every mode, whatever order
the router linked and recalled in). Everyone else gets the same 404 as for an id
that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.requests import ClientDisconnect

from im import attachments
from im.attachments import AttachmentTooLarge
from im.clock import Clock
from im.config import Settings
from im.ports import AttachmentMeta, AttachmentStore, BackendUnavailable, RateLimiter
from im.v1 import group_pb2, group_pb2_grpc, wire_pb2
from services.gateway.calls import Calls
from services.gateway.conversations import ConversationOps
from services.gateway.errors import ApiError, rate_limited
from services.gateway.limits import RateLimited

log = logging.getLogger("im.gateway")
T = TypeVar("T")

# A client that sends nothing for this long while uploading is cut off (408): a stalled
# upload would otherwise hold a store write open for ever.
UPLOAD_IDLE_TIMEOUT = 30.0
# Conversations looked at per download: an attachment shared further than this is
# still readable by its owner and the members of the first ones found.
MAX_LINKS_CHECKED = 200
METADATA_TIMEOUT = 5.0


def not_found() -> ApiError:
    return ApiError(404, "not_found", "no such attachment")


def _quota_exceeded(quota: int) -> ApiError:
    return ApiError(
        413, "quota_exceeded", f"your attachments would take more than your {quota} bytes"
    )


def unavailable(exc: BaseException) -> ApiError:
    log.warning("attachment store failed: %r", exc)
    return ApiError(503, "unavailable", "the attachment store is unavailable; retry later")


async def idle_limited(chunks: AsyncIterator[bytes], timeout: float) -> AsyncIterator[bytes]:
    """The chunks, failing with TimeoutError when the next one takes over ``timeout``."""
    iterator = aiter(chunks)
    while True:
        try:
            chunk = await asyncio.wait_for(anext(iterator), timeout)
        except StopAsyncIteration:
            return
        yield chunk


class AttachmentOps:
    """The attachment operations of ``Gateway`` (``gateway.attachment_ops``)."""

    def __init__(
        self,
        settings: Settings,
        store: AttachmentStore,
        groups: Callable[[], group_pb2_grpc.GroupServiceStub],
        conversations: ConversationOps,
        calls: Calls,
        rate_limits: Callable[[], RateLimiter],
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._store = store
        self._groups = groups
        self._conversations = conversations
        self._calls = calls
        self._rate_limits = rate_limits
        self._clock = clock
        self._allowed = attachments.parse_allowlist(settings.attachment_content_types)

    @property
    def store(self) -> AttachmentStore:
        return self._store

    # ------------------------------------------------------------------- upload

    def content_type(self, header: str | None) -> str:
        """The upload's media type, if the allowlist takes it (415 otherwise)."""
        media = attachments.normalize_content_type(header)
        if media is None or not attachments.is_allowed(media, self._allowed):
            shown = (header or "")[:100]
            raise ApiError(
                415, "unsupported_media_type", f"uploads of type {shown!r} are not accepted"
            )
        return media

    async def check_rate(self, me: int) -> None:
        limit = self._settings.attachment_uploads_per_hour
        if limit <= 0:
            return
        wait = await self._calls.degraded(
            "rate limits",
            self._rate_limits().hit(f"attachments:{me}", limit, 3600.0),
            0.0,
            "uploads are not rate limited",
        )
        if wait > 0:
            raise rate_limited(RateLimited(wait, f"at most {limit} uploads per hour"))

    async def upload(
        self, me: int, filename: str, content_type: str, chunks: AsyncIterator[bytes]
    ) -> AttachmentMeta:
        """Streams ``chunks`` into the store as a new attachment of ``me``, within the
        size limit and what is left of ``me``'s quota. Two uploads at once may pass the
        quota together by up to one size limit each: the check is not a lock."""
        size_limit = self._settings.max_attachment_bytes
        left = await self._quota_left(me)
        limit = size_limit if left is None else min(size_limit, left)
        body = attachments.rechunk(idle_limited(chunks, UPLOAD_IDLE_TIMEOUT))
        try:
            return await self._store.put(
                attachments.new_attachment_id(),
                me,
                attachments.sanitize_filename(filename),
                content_type,
                body,
                limit,
                self._clock.wall_ms(),
            )
        except AttachmentTooLarge:
            if limit < size_limit:
                raise _quota_exceeded(self._settings.attachment_quota_bytes) from None
            raise ApiError(
                413, "payload_too_large", f"the attachment is larger than {limit} bytes"
            ) from None
        except TimeoutError:
            raise ApiError(408, "request_timeout", "the upload stalled") from None
        except ClientDisconnect:
            raise ApiError(400, "invalid_request", "the upload was interrupted") from None
        except BackendUnavailable as exc:
            raise unavailable(exc) from exc

    async def used(self, me: int) -> int:
        """Bytes of the attachments ``me`` stored."""
        return await self._backend(self._store.usage(me))

    async def _quota_left(self, me: int) -> int | None:
        """Bytes ``me`` may still store (None: no quota); 413 when none."""
        quota = self._settings.attachment_quota_bytes
        if quota <= 0:
            return None
        left = quota - await self.used(me)
        if left <= 0:
            raise _quota_exceeded(quota)
        return left

    # ------------------------------------------------------------------ reading

    async def readable(self, me: int, attachment_id: str) -> AttachmentMeta:
        """The attachment's metadata if ``me`` may read it; 404 otherwise."""
        if not attachments.is_valid_attachment_id(attachment_id):
            raise not_found()
        meta = await self._backend(self._store.meta(attachment_id))
        if meta is None:
            raise not_found()
        if meta.owner_id == me:
            return meta
        links = await self._backend(self._store.links(attachment_id, MAX_LINKS_CHECKED))
        if links and await self._sees_a_link(me, attachment_id, links):
            return meta
        raise not_found()

    async def _sees_a_link(self, me: int, attachment_id: str, links: dict[str, int]) -> bool:
        request = group_pb2.CheckMembersRequest(user_id=me, conversation_ids=list(links))
        member_of = (await self._calls.rpc(self._groups().CheckMembers, request)).member_of
        for conversation_id in member_of:
            seq = links[conversation_id]
            # The linked message as ``me`` may read it: history starts after the
            # member's joined_seq, so an earlier message is not found.
            try:
                found, _ = await self._conversations.history(me, conversation_id, seq - 1, 1)
            except ApiError as exc:
                if exc.status in (403, 404):
                    continue  # left the conversation meanwhile
                raise
            if found and found[0].seq == seq and _carries(found[0], attachment_id):
                return True
        return False

    async def open(
        self, me: int, attachment_id: str
    ) -> tuple[AttachmentMeta, AsyncIterator[bytes]]:
        """Metadata and bytes of a readable attachment. The first chunk is read here,
        so a store that fails does so before the answer starts (503, not a cut
        download)."""
        meta = await self.readable(me, attachment_id)
        chunks = aiter(self._store.read(attachment_id))
        try:
            first = await asyncio.wait_for(anext(chunks, b""), METADATA_TIMEOUT)
        except (BackendUnavailable, TimeoutError) as exc:
            raise unavailable(exc) from exc
        return meta, _then(first, chunks)

    @staticmethod
    async def _backend(op: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(op, METADATA_TIMEOUT)
        except (BackendUnavailable, TimeoutError) as exc:
            raise unavailable(exc) from exc


def _carries(message: wire_pb2.Message, attachment_id: str) -> bool:
    """Whether the message still shares the attachment. The link keeps the latest
    message per conversation that sent it: once that one is recalled, an earlier
    message sending the same file no longer shares it either (refused, never leaked)."""
    return not message.recalled and attachment_id in message.attachment_ids


async def _then(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
