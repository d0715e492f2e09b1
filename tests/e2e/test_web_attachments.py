"""Attachments in the web chat page (chromium via Playwright, see tests/e2e/web.py):
alice attaches an image and a text file; bob sees the image inline (fetched with his
token) and the text file as a button that downloads it."""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING

import pytest

from tests.e2e import web
from tests.e2e.harness import RunningSuite

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.e2e


def png(width: int = 8, height: int = 8) -> bytes:
    """A small valid RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_an_image_shows_inline_and_a_file_downloads(browser: Browser, suite: RunningSuite) -> None:
    from playwright.sync_api import expect

    with web.users(browser, suite.gateway, "alice", "bob", csp_errors=True) as opened:
        (a, b), (alice, bob) = opened.pages, opened.names
        web.open_chat(a, bob)
        expect(a.get_by_test_id("attach-button")).to_be_enabled()
        a.get_by_test_id("attach").set_input_files(
            [
                {"name": "red.png", "mimeType": "image/png", "buffer": png()},
                {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"remember the milk"},
            ]
        )
        sent = a.get_by_test_id("message").filter(has_text="red.png")
        expect(sent).to_have_attribute("data-status", "delivered")
        expect(sent.locator("img")).to_be_visible()  # the sender sees it too

        b.get_by_test_id("conversation").filter(has_text=alice).click()
        image = b.get_by_test_id("attachment").locator("img")
        expect(image).to_be_visible()
        assert image.evaluate("img => img.naturalWidth") == 8
        assert image.get_attribute("src", timeout=web.TIMEOUT_MS).startswith("blob:")
        save = b.get_by_test_id("attachment").get_by_role("button", name="notes.txt")
        expect(save).to_be_visible()
        with b.expect_download() as download:
            save.click()
        assert download.value.suggested_filename == "notes.txt"
        assert open(download.value.path(), "rb").read() == b"remember the milk"
        assert not opened.errors, opened.errors
