"""Recall and edit on the web chat page (chromium via Playwright, see tests/e2e/web.py):
alice edits her message and then recalls it with the buttons of her bubble; bob's page
shows "(edited)" and then "message recalled", live, without the events as bubbles."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.e2e import web
from tests.e2e.harness import RunningSuite

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.e2e


def test_edit_and_recall_in_the_page(browser: Browser, suite: RunningSuite) -> None:
    from playwright.sync_api import expect

    with web.users(browser, suite.gateway, "alice", "bob") as opened:
        (a, b), (alice, bob) = opened.pages, opened.names
        web.open_chat(a, bob)
        web.send(a, "helo bob")
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
        assert not opened.errors, opened.errors
