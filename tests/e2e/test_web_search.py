"""The web page's search box in a real browser (chromium via Playwright, see
tests/e2e/web.py): a hit shows the matching word marked, and opens its conversation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.e2e import web
from tests.e2e.harness import RunningSuite

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.e2e


def test_search_box_finds_and_opens(browser: Browser, suite: RunningSuite) -> None:
    from playwright.sync_api import expect

    (word,) = web.names("pineapple")
    with web.users(browser, suite.gateway, "alice", "bob") as opened:
        (a, b), (alice, bob) = opened.pages, opened.names
        web.open_chat(a, bob)
        a.get_by_test_id("composer").fill(f"{word} pizza <b>tonight</b>?")
        a.get_by_test_id("composer").press("Enter")
        sent = a.get_by_test_id("message").filter(has_text=word)
        expect(sent).to_have_attribute("data-status", "delivered")

        b.get_by_test_id("search").fill(f"PIZZA {word}")
        b.get_by_test_id("search").press("Enter")
        hit = b.get_by_test_id("search-hit")
        expect(hit).to_have_count(1)
        expect(hit.locator("mark").first).to_have_text(word)
        expect(hit).to_contain_text("<b>tonight</b>?")  # text, never markup
        hit.click()
        expect(b.locator("#title")).to_have_text(alice)
        expect(b.get_by_test_id("message").filter(has_text=word)).to_be_visible()

        b.get_by_test_id("search").fill("nothing-like-this")
        b.get_by_test_id("search").press("Enter")
        expect(b.get_by_test_id("search-results")).to_contain_text("No messages found.")
        assert not opened.errors, opened.errors
