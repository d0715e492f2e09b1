"""One contract for the attachment store, run against every adapter.

- ``file``: FileAttachmentStore in a temporary folder (standalone default).
- ``gridfs``: GridFsAttachmentStore (integration, ``mongo_url``) in a database of its
  own, dropped afterwards.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from im.adapters.file_attachments import FileAttachmentStore
from im.adapters.gridfs_attachments import GridFsAttachmentStore
from im.attachments import AttachmentTooLarge, new_attachment_id
from im.ports import AttachmentLink


@pytest.fixture(
    params=[
        pytest.param("file", id="file"),
        pytest.param("gridfs", id="gridfs", marks=pytest.mark.integration),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "file":
        folder = FileAttachmentStore(tmp_path / "attachments")
        yield folder
        await folder.close()
        return
    database = f"im_test_{uuid.uuid4().hex[:12]}"
    grid = GridFsAttachmentStore(request.getfixturevalue("mongo_url"), database=database)
    try:
        yield grid
    finally:
        await grid._client.drop_database(database)
        await grid.close()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read_all(store: Any, attachment_id: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(attachment_id)])


async def put(store: Any, owner: int, *parts: bytes, limit: int = 10_000_000) -> Any:
    return await store.put(
        new_attachment_id(), owner, "cat.png", "image/png", chunks(*parts), limit, 1_700_000_000_000
    )


async def test_put_then_read_gives_the_same_bytes_and_metadata(store: Any) -> None:
    data = bytes(range(256)) * 2000  # 512 000 bytes: several GridFS chunks
    meta = await put(store, 7, data[:100_000], data[100_000:])
    assert meta.size == len(data)
    assert meta.sha256 == hashlib.sha256(data).hexdigest()
    assert await read_all(store, meta.attachment_id) == data
    found = await store.meta(meta.attachment_id)
    assert found == meta
    assert found.owner_id == 7 and found.filename == "cat.png"
    assert found.content_type == "image/png"


async def test_an_empty_file_is_stored(store: Any) -> None:
    meta = await put(store, 7)
    assert meta.size == 0
    assert await read_all(store, meta.attachment_id) == b""


async def test_unknown_id_has_no_metadata(store: Any) -> None:
    assert await store.meta(new_attachment_id()) is None


async def test_an_upload_past_the_limit_leaves_nothing(store: Any) -> None:
    attachment_id = new_attachment_id()
    with pytest.raises(AttachmentTooLarge):
        await store.put(
            attachment_id,
            7,
            "big.bin",
            "application/octet-stream",
            chunks(b"x" * 600, b"y" * 600),
            1000,
            1,
        )
    assert await store.meta(attachment_id) is None


async def test_usage_sums_the_whole_uploads_of_one_owner(store: Any) -> None:
    assert await store.usage(7) == 0
    await put(store, 7, b"a" * 300)
    await put(store, 7, b"b" * 200, b"c" * 100)
    await put(store, 8, b"d" * 50)
    with pytest.raises(AttachmentTooLarge):  # refused: it counts for nothing
        await put(store, 7, b"x" * 600, b"y" * 600, limit=1000)
    assert (await store.usage(7), await store.usage(8), await store.usage(9)) == (600, 50, 0)


async def test_an_upload_whose_source_fails_leaves_nothing(store: Any) -> None:
    attachment_id = new_attachment_id()

    async def failing() -> AsyncIterator[bytes]:
        yield b"a" * 300_000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put(attachment_id, 7, "a.bin", "application/octet-stream", failing(), 10**7, 1)
    assert await store.meta(attachment_id) is None


async def test_links_count_only_for_the_owner(store: Any) -> None:
    mine = await put(store, 7, b"mine")
    links = [
        AttachmentLink(mine.attachment_id, "g:1", 5, sender_id=7),
        AttachmentLink(mine.attachment_id, "g:2", 9, sender_id=8),  # not the owner
        AttachmentLink(new_attachment_id(), "g:1", 6, sender_id=7),  # no such file
    ]
    assert await store.link(links) == 1
    assert await store.links(mine.attachment_id, 10) == {"g:1": 5}


async def test_a_link_keeps_the_highest_seq_and_is_idempotent(store: Any) -> None:
    meta = await put(store, 7, b"x")
    await store.link([AttachmentLink(meta.attachment_id, "d:7:8", 10, 7)])
    await store.link([AttachmentLink(meta.attachment_id, "d:7:8", 4, 7)])
    await store.link([AttachmentLink(meta.attachment_id, "d:7:8", 10, 7)])
    await store.link([AttachmentLink(meta.attachment_id, "g:3", 2, 7)])
    assert await store.links(meta.attachment_id, 10) == {"d:7:8": 10, "g:3": 2}
    assert len(await store.links(meta.attachment_id, 1)) == 1
    other = await put(store, 7, b"y")
    assert await store.links(other.attachment_id, 10) == {}


async def test_healthy(store: Any) -> None:
    assert await store.healthy()
