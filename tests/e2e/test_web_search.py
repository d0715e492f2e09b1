"""The web page's search box in a real browser (see test_web_chat for the setup):
a hit shows the matching word marked, and opens its conversation."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.harness import RunningSuite
from tests.e2e.test_web_chat import TIMEOUT_MS, browser, register  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e


def test_search_box_finds_and_opens(browser, suite: RunningSuite):  # type: ignore[no-untyped-def]  # noqa: F811
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    run = uuid.uuid4().hex[:6]
    alice, bob, word = f"alice{run}", f"bob{run}", f"pineapple{run}"
    contexts = [browser.new_context(viewport={"width": 1100, "height": 700}) for _ in range(2)]
    a, b = (c.new_page() for c in contexts)
    errors: list[str] = []
    for page in (a, b):
        page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        register(a, suite.gateway, alice)
        register(b, suite.gateway, bob)
        a.get_by_test_id("peer").fill(bob)
        a.get_by_test_id("peer").press("Enter")
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
        assert not errors, errors
    finally:
        for context in contexts:
            context.close()
