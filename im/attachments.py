"""Shape rules of attachments, shared by the gateway (upload, download), the connector
(a Send's ``attachment_ids``) and the store adapters: ids, file names, content types,
and the digest every upload is counted and hashed through.

Pure functions without I/O, except ``Digest``, which only wraps a chunk iterator.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import AsyncIterator, Iterable
from urllib.parse import quote

from im.ids import typeable_token
from im.validation import BIDI_CONTROLS, LINE_BREAKS

# 128 random bits, URL-safe base64 without padding: 22 characters. Unguessable, so an
# id seen in one conversation tells nothing about any other attachment.
ID_BYTES = 16
ID_CHARS = 22
_ID = re.compile(rf"[A-Za-z0-9_-]{{{ID_CHARS}}}")

MAX_FILENAME_CHARS = 200
DEFAULT_FILENAME = "file"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# "type/subtype" of RFC 6838: restricted names, no parameters.
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
# Characters a file name never keeps: path separators, quotes that end a header value,
# and the ones Windows refuses.
_FILENAME_DROP = set('/\\"<>:|?*') | BIDI_CONTROLS | LINE_BREAKS
CHUNK_BYTES = 256 * 1024  # read and stream in pieces of this size


class AttachmentTooLarge(Exception):
    """An upload went past the size limit (it is abandoned, never stored)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the attachment is larger than {limit} bytes")
        self.limit = limit


def new_attachment_id() -> str:
    return typeable_token(ID_BYTES)


def is_valid_attachment_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def check_ids(ids: Iterable[str], most: int) -> str | None:
    """What is wrong with a message's attachment ids, or None."""
    ids = list(ids)
    if len(ids) > most:
        return f"at most {most} attachment_ids per message"
    for value in ids:
        if not is_valid_attachment_id(value):
            return f"malformed attachment id {value[:40]!r}"
    if len(set(ids)) != len(ids):
        return "attachment_ids repeat an id"
    return None


def sanitize_filename(name: str) -> str:
    """A name safe to store, show and put in a Content-Disposition header: the last
    path component, NFC, without control, bidi or path characters, at most
    MAX_FILENAME_CHARS (the extension kept), never empty or dots only."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    kept = [
        " " if ch.isspace() else ch
        for ch in name
        if ch.isspace()
        or (ch not in _FILENAME_DROP and unicodedata.category(ch) not in ("Cc", "Cs", "Co"))
    ]
    name = " ".join("".join(kept).split()).strip(" .")
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME_CHARS - len(ext) - 1].rstrip(" .") + "." + ext
        else:
            name = name[:MAX_FILENAME_CHARS].rstrip(" .")
    return name or DEFAULT_FILENAME


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact UTF-8 one (RFC 6266):
    a download is saved, never rendered in the API's origin."""
    ascii_name = "".join(ch if 32 <= ord(ch) < 127 else "_" for ch in filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def normalize_content_type(header: str | None) -> str | None:
    """The media type of a Content-Type header, lower-cased, without parameters;
    ``application/octet-stream`` when absent; None when malformed."""
    if not header or not header.strip():
        return DEFAULT_CONTENT_TYPE
    media = header.split(";", 1)[0].strip().lower()
    return media if _MIME.fullmatch(media) else None


def parse_allowlist(setting: str) -> list[str]:
    return [e.strip().lower() for e in setting.split(",") if e.strip()]


def is_allowed(content_type: str, allowlist: list[str]) -> bool:
    """Exact types, ``type/*`` for a whole family, ``*/*`` for anything."""
    family = content_type.split("/", 1)[0] + "/*"
    return any(entry in (content_type, family, "*/*") for entry in allowlist)


class Digest:
    """Wraps an upload's chunks: counts and hashes them as the store consumes them,
    and raises ``AttachmentTooLarge`` as soon as more than ``limit`` bytes came."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: int) -> None:
        self._chunks = chunks
        self._limit = limit
        self._hash = hashlib.sha256()
        self.size = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            if not chunk:
                continue
            self.size += len(chunk)
            if self.size > self._limit:
                raise AttachmentTooLarge(self._limit)
            self._hash.update(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


async def rechunk(chunks: AsyncIterator[bytes], size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """Chunks of exactly ``size`` bytes (the last one shorter): an HTTP body arrives in
    pieces of any size, a store writes whole blocks."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
