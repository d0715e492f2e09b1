"""The web chat page in a real browser (chromium via Playwright, see tests/e2e/web.py):
two users register, chat both ways, one goes offline and gets what was sent meanwhile by
sync, a group; a screenshot is left in test-artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import web
from tests.e2e.harness import RunningSuite

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_two_users_chat_in_the_page(browser: Browser, suite: RunningSuite) -> None:
    from playwright.sync_api import expect

    with web.users(browser, suite.gateway, "alice", "bob") as opened:
        (a, b), (alice, bob) = opened.pages, opened.names

        # Alice opens a 1:1 by username (Enter) and sends; the mark follows the message.
        web.open_chat(a, bob)
        web.send(a, "hello bob")
        hello = a.get_by_test_id("message").filter(has_text="hello bob")
        expect(hello).to_have_attribute("data-status", "delivered")

        # Bob sees the conversation with one unread, opens it: alice sees it read.
        entry = b.get_by_test_id("conversation").filter(has_text=alice)
        expect(entry.locator(".unread")).to_have_text("1")
        entry.click()
        expect(b.get_by_test_id("message").filter(has_text="hello bob")).to_be_visible()
        expect(entry.locator(".unread")).to_have_count(0)
        expect(hello).to_have_attribute("data-status", "read")

        b.get_by_test_id("composer").fill("hi alice")
        b.get_by_test_id("composer").press("Enter")
        expect(a.get_by_test_id("message").filter(has_text="hi alice")).to_be_visible()

        # Bob goes offline: what alice sends meanwhile reaches him by sync.
        opened.contexts[1].set_offline(True)
        expect(b.locator("#status")).to_have_attribute("data-state", "offline")
        a.get_by_test_id("composer").fill("while you were away")
        a.get_by_test_id("composer").press("Enter")
        away = a.get_by_test_id("message").filter(has_text="while you were away")
        expect(away).to_have_attribute("data-status", "delivered")
        assert b.get_by_test_id("message").filter(has_text="while you were away").count() == 0
        opened.contexts[1].set_offline(False)
        expect(b.locator("#status")).to_have_attribute("data-state", "online")
        expect(b.get_by_test_id("message").filter(has_text="while you were away")).to_be_visible()
        expect(away).to_have_attribute("data-status", "read")
        expect(b.get_by_test_id("message")).to_have_count(3)  # once each

        # A group: alice creates it with bob; bob gets it in his list.
        web.new_group(a, "weekend", bob)
        a.get_by_test_id("composer").fill("who's in?")
        a.get_by_test_id("composer").press("Enter")
        group = b.get_by_test_id("conversation").filter(has_text="weekend")
        expect(group.locator(".unread")).to_have_text("1")
        group.click()
        expect(b.get_by_test_id("message").filter(has_text="who's in?")).to_contain_text(alice)
        mine = a.get_by_test_id("message").filter(has_text="who's in?")
        expect(mine).to_contain_text("read by 1")

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "web-chat.png"
        a.get_by_test_id("conversation").filter(has_text=bob).click()
        expect(a.get_by_test_id("message")).to_have_count(3)
        a.screenshot(path=str(shot))
        print(f"screenshot: {shot}")

        b.get_by_test_id("logout").click()
        expect(b.get_by_test_id("login")).to_be_visible()
        assert not opened.errors, opened.errors


def test_group_events_and_settings_in_the_page(browser: Browser, suite: RunningSuite) -> None:
    from playwright.sync_api import expect

    with web.users(browser, suite.gateway, "alice", "bob", "carol") as opened:
        (a, b, c), (alice, bob, carol) = opened.pages, opened.names
        web.new_group(a, "weekend", bob)

        # Rename in the settings panel: everyone sees the event line and the new name.
        a.locator("#members-toggle").click()
        a.get_by_test_id("rename").fill("crew")
        a.get_by_test_id("rename").press("Enter")
        line = f'{alice} renamed the group to "crew"'
        expect(a.get_by_test_id("event").filter(has_text=line)).to_be_visible()
        expect(a.locator("#title")).to_have_text("crew")
        b.get_by_test_id("conversation").filter(has_text="crew").click()
        expect(b.get_by_test_id("event").filter(has_text=line)).to_be_visible()

        # An invite link: carol joins with its token; the others see her join.
        a.get_by_test_id("invite").click()
        expect(a.get_by_test_id("invite-token")).to_contain_text("Token")
        token = a.get_by_test_id("invite-token").text_content().rsplit(" ", 1)[-1]
        c.locator("#join-group summary").click()
        c.get_by_test_id("join-token").fill(token)
        c.get_by_test_id("join-token").press("Enter")
        expect(c.locator("#title")).to_have_text("crew")
        joined = f"{carol} joined by invite link"
        expect(c.get_by_test_id("event").filter(has_text=joined)).to_be_visible()
        expect(b.get_by_test_id("event").filter(has_text=joined)).to_be_visible()
        assert not opened.errors, opened.errors


def test_typing_indicator_and_the_peer_online_dot(browser: Browser, suite: RunningSuite) -> None:
    from playwright.sync_api import expect

    with web.users(browser, suite.gateway, "alice", "bob") as opened:
        (a, b), (alice, bob) = opened.pages, opened.names
        web.open_chat(a, bob)
        web.open_chat(b, alice)

        # Both are online: each sees the other's dot in the header and the list.
        expect(a.get_by_test_id("presence")).to_have_attribute("data-state", "online")
        expect(
            b.get_by_test_id("conversation").filter(has_text=alice).get_by_test_id("online")
        ).to_have_count(1)

        # Bob types: alice sees it; his message ends it.
        b.get_by_test_id("composer").press_sequentially("hello", delay=20)
        expect(a.get_by_test_id("typing")).to_have_text(f"{bob} is typing…")
        b.get_by_test_id("composer").press("Enter")
        expect(a.get_by_test_id("message").filter(has_text="hello")).to_be_visible()
        expect(a.get_by_test_id("typing")).to_have_text("")

        # Bob leaves: after the debounce alice sees when he was last seen.
        opened.contexts[1].close()
        expect(a.get_by_test_id("presence")).to_have_attribute("data-state", "offline")
        expect(a.get_by_test_id("presence")).to_contain_text("last seen")
        assert not opened.errors, opened.errors


def test_pin_mute_name_and_archive_follow_every_device_of_the_user(
    browser: Browser, suite: RunningSuite
) -> None:
    from playwright.sync_api import expect

    alice, bob = web.names("alice", "bob")
    with web.open_pages(browser, 3) as opened:
        a, phone, b = opened.pages
        web.register(b, suite.gateway, bob)
        web.register(a, suite.gateway, alice)
        web.log_in(phone, suite.gateway, alice)  # a second device of alice's
        for name in ("first", "second"):
            web.new_group(a, name, bob)
            a.get_by_test_id("composer").fill(f"in {name}")
            a.get_by_test_id("composer").press("Enter")
        listed = phone.get_by_test_id("conversation")
        expect(listed.first).to_contain_text("second")  # the most recent first

        a.get_by_test_id("conversation").filter(has_text="first").click()
        a.get_by_test_id("pin").click()
        a.get_by_test_id("mute").click()
        expect(a.get_by_test_id("mute")).to_have_text("Unmute")
        expect(a.get_by_test_id("pin")).to_have_text("Unpin")
        # The other device follows at once: pinned first, marked muted.
        first = phone.get_by_test_id("conversation").filter(has_text="first")
        expect(first).to_have_attribute("data-pinned", "true")
        expect(first).to_have_attribute("data-muted", "true")
        expect(listed.first).to_contain_text("first")
        # Bob's list is his own: nothing pinned or muted there.
        theirs = b.get_by_test_id("conversation").filter(has_text="first")
        expect(theirs).to_have_attribute("data-muted", "false")

        phone.reload()  # a fresh start reads the settings from the list
        expect(phone.locator("#status")).to_have_attribute("data-state", "online")
        expect(phone.get_by_test_id("conversation").first).to_have_attribute("data-pinned", "true")
        a.get_by_test_id("mute").click()
        expect(first).to_have_attribute("data-muted", "false")

        # A name only alice sees, then archived: listed last, under a heading.
        a.once("dialog", lambda dialog: dialog.accept("Work chat"))
        a.get_by_test_id("own-name").click()
        renamed = phone.get_by_test_id("conversation").filter(has_text="Work chat")
        expect(renamed).to_have_count(1)
        expect(b.get_by_test_id("conversation").filter(has_text="Work chat")).to_have_count(0)
        a.get_by_test_id("archive").click()
        expect(a.get_by_test_id("archive")).to_have_text("Unarchive")
        expect(renamed).to_have_attribute("data-archived", "true")
        expect(listed.last).to_contain_text("Work chat")
        expect(phone.get_by_test_id("archived-heading")).to_be_visible()
        assert not opened.errors, opened.errors
