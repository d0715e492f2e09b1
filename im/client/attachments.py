"""Attachments through the gateway (docs/rest-api.md, "Attachments"): upload a file
or bytes, read an attachment's metadata, download it to memory or to a file. Both
directions stream: a file is never held in memory whole.

Used through ``GatewayClient`` (``upload_file``, ``upload_bytes``, ``attachment``,
``download``, ``download_to``); a message refers to uploads by their ids
(``ImClient.send(..., attachment_ids=[...])``).
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx

from im.client.errors import ApiError
from im.client.gateway_http import _problem

if TYPE_CHECKING:
    from im.client.gateway import GatewayClient

CHUNK = 256 * 1024
T = TypeVar("T")


def guess_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            yield chunk
    finally:
        handle.close()


async def _authorized(gw: GatewayClient, call: Callable[[dict[str, str]], Awaitable[T]]) -> T:
    """``call`` with the bearer header; once more after a refresh when the access
    token had expired (the body is made afresh by ``call``)."""
    for attempt in (1, 2):
        sent = gw.token
        if not sent:
            raise ApiError(401, "unauthorized", "not logged in")
        try:
            return await call({"authorization": f"Bearer {sent}"})
        except ApiError as exc:
            expired = exc.status == 401 and exc.code == "unauthorized"
            if attempt == 2 or not expired or not gw.refresh_token:
                raise
            if not await gw._refresh_after(sent):
                raise
        except httpx.TransportError as exc:
            raise ApiError(0, "unreachable", f"{gw.base_url}: {exc!r}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _check(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise _problem(response)


async def limits(gw: GatewayClient) -> dict[str, Any]:
    """``{max_bytes, content_types, max_per_message}`` of the gateway's uploads."""
    return await gw._request("GET", "/v1/attachments/limits")


async def upload(
    gw: GatewayClient,
    body: Callable[[], AsyncIterator[bytes] | bytes],
    size: int,
    filename: str,
    content_type: str | None,
) -> dict[str, Any]:
    """POST /v1/attachments; ``body`` makes the bytes (again for a retry)."""
    try:
        return await _upload(gw, body, size, filename, content_type)
    except ApiError as exc:
        if exc.status != 0:
            raise
        # The gateway refuses a too-large upload before reading it and closes the
        # connection; a client still sending sees that as a broken connection.
        try:
            most = int((await limits(gw))["max_bytes"])
        except (ApiError, KeyError, TypeError, ValueError):
            raise exc from None
        if size > most:
            raise ApiError(
                413, "payload_too_large", f"the attachment is larger than {most} bytes"
            ) from exc
        raise


async def _upload(
    gw: GatewayClient,
    body: Callable[[], AsyncIterator[bytes] | bytes],
    size: int,
    filename: str,
    content_type: str | None,
) -> dict[str, Any]:

    async def once(headers: dict[str, str]) -> dict[str, Any]:
        headers = {
            **headers,
            "content-type": content_type or guess_type(filename),
            # Declared, so a file over the limit is refused before it is sent.
            "content-length": str(size),
        }
        response = await gw._http.post(
            "/v1/attachments", params={"filename": filename}, content=body(), headers=headers
        )
        _check(response)
        return response.json()

    return await _authorized(gw, once)


async def upload_file(
    gw: GatewayClient, path: str | os.PathLike[str], content_type: str | None = None
) -> dict[str, Any]:
    """Upload a file from disk: ``{attachment_id, size, sha256, content_type, ...}``."""
    path = Path(path)
    size = (await asyncio.to_thread(path.stat)).st_size
    return await upload(gw, lambda: _file_chunks(path), size, path.name, content_type)


async def upload_bytes(
    gw: GatewayClient, data: bytes, filename: str, content_type: str | None = None
) -> dict[str, Any]:
    return await upload(gw, lambda: bytes(data), len(data), filename, content_type)


async def metadata(gw: GatewayClient, attachment_id: str) -> dict[str, Any]:
    return await gw._request("GET", f"/v1/attachments/{quote(attachment_id, safe='')}/meta")


async def _stream_to(
    gw: GatewayClient, attachment_id: str, sink: Callable[[bytes], Awaitable[None]]
) -> dict[str, str]:
    """Streams the attachment into ``sink``; returns its response headers."""

    async def once(headers: dict[str, str]) -> dict[str, str]:
        url = f"/v1/attachments/{quote(attachment_id, safe='')}"
        async with gw._http.stream("GET", url, headers=headers) as response:
            if response.status_code >= 400:
                await response.aread()
                _check(response)
            async for chunk in response.aiter_bytes(CHUNK):
                await sink(chunk)
            return dict(response.headers)

    return await _authorized(gw, once)


async def download(gw: GatewayClient, attachment_id: str) -> bytes:
    """The attachment's bytes (for small files; ``download_to`` streams to disk)."""
    parts: list[bytes] = []

    async def keep(chunk: bytes) -> None:
        parts.append(chunk)

    await _stream_to(gw, attachment_id, keep)
    return b"".join(parts)


async def download_to(gw: GatewayClient, attachment_id: str, path: str | os.PathLike[str]) -> int:
    """Stream the attachment into ``path`` (written whole or not at all); returns
    the bytes written."""
    path = Path(path)
    partial = path.with_name(path.name + ".part")
    handle = await asyncio.to_thread(open, partial, "wb")
    written = 0

    async def write(chunk: bytes) -> None:
        nonlocal written
        await asyncio.to_thread(handle.write, chunk)
        written += len(chunk)

    try:
        try:
            await _stream_to(gw, attachment_id, write)
        finally:
            handle.close()
        await asyncio.to_thread(os.replace, partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return written
