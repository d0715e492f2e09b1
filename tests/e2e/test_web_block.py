"""Blocking from the web page (chromium via Playwright, see tests/e2e/web.py): alice
blocks bob from their 1:1 conversation, bob's next message is not sent, alice unblocks
and his message goes through."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.e2e import web
from tests.e2e.harness import RunningSuite

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.e2e


def test_block_and_unblock_from_the_page(browser: Browser, suite: RunningSuite) -> None:
    from playwright.sync_api import expect

    with web.users(browser, suite.gateway, "alice", "bob") as opened:
        (a, b), (alice, bob) = opened.pages, opened.names
        web.open_chat(a, bob)
        web.send(a, "hi bob")
        web.open_chat(b, alice)
        expect(b.get_by_test_id("message").filter(has_text="hi bob")).to_be_visible()

        block = a.get_by_test_id("block")
        expect(block).to_have_text("Block")
        block.click()
        expect(block).to_have_text("Unblock")
        web.send(b, "are you there")
        refused = b.get_by_test_id("message").filter(has_text="are you there")
        expect(refused).to_have_attribute("data-status", "failed")

        block.click()
        expect(block).to_have_text("Block")
        web.send(b, "hello again")
        expect(a.get_by_test_id("message").filter(has_text="hello again")).to_be_visible()
        assert opened.errors == []
