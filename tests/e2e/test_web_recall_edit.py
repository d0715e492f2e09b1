"""Recall and edit on the web chat page (chromium via Playwright, as test_web_chat.py):
alice edits her message and then recalls it with the buttons of her bubble; bob's page
shows "(edited)" and then "message recalled", live, without the events as bubbles."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e import test_web_chat as web
from tests.e2e.harness import RunningSuite

pytestmark = pytest.mark.e2e

browser = web.browser  # the same module-scoped chromium fixture


def test_edit_and_recall_in_the_page(browser, suite: RunningSuite):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    expect.set_options(timeout=web.TIMEOUT_MS)
    run = uuid.uuid4().hex[:6]
    alice, bob = f"alice{run}", f"bob{run}"
    contexts = [browser.new_context(viewport={"width": 1100, "height": 700}) for _ in range(2)]
    a, b = (c.new_page() for c in contexts)
    errors: list[str] = []
    for page in (a, b):
        page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        web.register(a, suite.gateway, alice)
        web.register(b, suite.gateway, bob)
        a.get_by_test_id("peer").fill(bob)
        a.get_by_test_id("peer").press("Enter")
        a.get_by_test_id("composer").fill("helo bob")
        a.get_by_test_id("send").click()
        mine = a.get_by_test_id("message").filter(has_text="helo bob")
        expect(mine).to_have_attribute("data-status", "delivered")
        b.get_by_test_id("conversation").filter(has_text=alice).click()
        theirs = b.get_by_test_id("message")
        expect(theirs).to_contain_text("helo bob")
        expect(theirs.get_by_test_id("edit")).to_have_count(0)  # not bob's to edit

        a.once("dialog", lambda dialog: dialog.accept("hello bob"))
        mine.get_by_test_id("edit").click()
        expect(theirs).to_contain_text("hello bob")
        expect(theirs).to_contain_text("(edited)")
        expect(theirs).to_have_attribute("data-state", "edited")
        expect(a.get_by_test_id("message")).to_contain_text("(edited)")

        a.get_by_test_id("message").get_by_test_id("recall").click()
        expect(theirs).to_have_attribute("data-state", "recalled")
        expect(theirs).to_contain_text("message recalled")
        expect(theirs).not_to_contain_text("hello bob")
        expect(a.get_by_test_id("message")).to_have_attribute("data-state", "recalled")
        expect(a.get_by_test_id("message").get_by_test_id("recall")).to_have_count(0)
        expect(b.get_by_test_id("message")).to_have_count(1)  # events are no bubbles

        # After a reload, history shows the same: the text is gone on the server.
        b.reload()
        expect(b.locator("#status")).to_have_attribute("data-state", "online")
        b.get_by_test_id("conversation").filter(has_text=alice).click()
        expect(b.get_by_test_id("message")).to_have_attribute("data-state", "recalled")
        assert not errors, errors
    finally:
        for context in contexts:
            context.close()
