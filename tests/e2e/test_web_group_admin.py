"""Managing a group in the web page (services/gateway/web/groupadmin.js), in a real
browser: an invite link that needs approval, the request approved from the panel, the
group passed to another member, who dissolves it; every page shows the events."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.e2e import web
from tests.e2e.harness import RunningSuite

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.e2e


def test_approve_a_join_pass_the_group_on_and_dissolve_it(
    browser: Browser, suite: RunningSuite
) -> None:
    from playwright.sync_api import expect

    with web.users(browser, suite.gateway, "alice", "bob", "carol") as opened:
        (a, b, c), (alice, bob, carol) = opened.pages, opened.names
        web.new_group(a, "club", bob)
        a.locator("#members-toggle").click()
        expect(a.get_by_test_id("dissolve")).to_be_visible()  # alice owns it

        # An invite link that needs approval: carol asks, alice approves in the panel.
        a.get_by_test_id("invite-approval").check()
        a.get_by_test_id("invite").click()
        expect(a.get_by_test_id("invite-token")).to_contain_text("Token")
        token = (a.get_by_test_id("invite-token").text_content() or "").rsplit(" ", 1)[-1]
        c.locator("#join-group summary").click()
        c.get_by_test_id("join-token").fill(token)
        c.get_by_test_id("join-token").press("Enter")
        expect(c.locator("#side-error")).to_contain_text("an admin will decide")
        a.get_by_test_id("join-requests-refresh").click()
        asked = a.get_by_test_id("join-request").filter(has_text=carol)
        asked.get_by_role("button", name="Approve").click()
        joined = f"{carol} joined (approved by {alice})"
        expect(a.get_by_test_id("event").filter(has_text=joined)).to_be_visible()
        expect(a.get_by_test_id("join-request")).to_have_count(0)
        expect(c.get_by_test_id("conversation").filter(has_text="club")).to_be_visible()

        # Alice makes bob the owner: she is an admin now, with no Dissolve button.
        a.once("dialog", lambda dialog: dialog.accept())
        member = a.get_by_test_id("member").filter(has_text=bob)
        member.get_by_role("button", name="Make owner").click()
        moved = f"{alice} made {bob} the owner"
        expect(a.get_by_test_id("event").filter(has_text=moved)).to_be_visible()
        expect(a.get_by_test_id("member").filter(has_text="you")).to_contain_text("(admin)")
        expect(a.get_by_test_id("dissolve")).to_be_hidden()

        # Bob dissolves it: every page shows the event and a read-only composer.
        b.get_by_test_id("conversation").filter(has_text="club").click()
        b.locator("#members-toggle").click()
        b.once("dialog", lambda dialog: dialog.accept())
        b.get_by_test_id("dissolve").click()
        ended = f"{bob} dissolved the group"
        expect(a.get_by_test_id("event").filter(has_text=ended)).to_be_visible()
        expect(a.get_by_test_id("composer")).to_be_disabled()
        expect(b.get_by_test_id("dissolve")).to_be_hidden()
        assert not opened.errors, opened.errors
