"""Blocking from the web page (Debian's chromium, driven by Playwright): alice blocks
bob from their 1:1 conversation, bob's next message is not sent, alice unblocks and
his message goes through."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.harness import RunningSuite
from tests.e2e.test_web_chat import TIMEOUT_MS, browser, register

pytestmark = pytest.mark.e2e
__all__ = ["browser"]  # the fixture, shared with the chat page's test


def open_direct(page, peer: str) -> None:  # type: ignore[no-untyped-def]
    page.get_by_test_id("peer").fill(peer)
    page.get_by_test_id("peer").press("Enter")


def send(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.get_by_test_id("composer").fill(text)
    page.get_by_test_id("send").click()


def test_block_and_unblock_from_the_page(browser, suite: RunningSuite):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    run = uuid.uuid4().hex[:6]
    alice, bob = f"alice{run}", f"bob{run}"
    contexts = [browser.new_context() for _ in range(2)]
    a, b = (c.new_page() for c in contexts)
    errors: list[str] = []
    for page in (a, b):
        page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        register(a, suite.gateway, alice)
        register(b, suite.gateway, bob)
        open_direct(a, bob)
        send(a, "hi bob")
        open_direct(b, alice)
        expect(b.get_by_test_id("message").filter(has_text="hi bob")).to_be_visible()

        block = a.get_by_test_id("block")
        expect(block).to_have_text("Block")
        block.click()
        expect(block).to_have_text("Unblock")
        send(b, "are you there")
        refused = b.get_by_test_id("message").filter(has_text="are you there")
        expect(refused).to_have_attribute("data-status", "failed")

        block.click()
        expect(block).to_have_text("Block")
        send(b, "hello again")
        expect(a.get_by_test_id("message").filter(has_text="hello again")).to_be_visible()
        assert errors == []
    finally:
        for context in contexts:
            context.close()
