"""What the web page tests (tests/e2e/test_web_*.py) share: pages in separate browser
contexts with the errors they throw collected, users registered on them, and the
page's common moves. The chromium they run in is conftest.py's ``browser`` fixture.

Playwright is imported inside the functions: without it the tests are skipped by that
fixture, not broken at collection."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

TIMEOUT_MS = 15_000
VIEWPORT = {"width": 1100, "height": 700}  # wide enough for the list beside the chat


@dataclass
class Pages:
    """One page per browser context (its own storage: a user, or a device of one)."""

    contexts: list[BrowserContext]
    pages: list[Page]
    errors: list[str]  # uncaught exceptions in any page; a test ends asserting none
    names: list[str] = field(default_factory=list)  # who registered on each page


def names(*prefixes: str) -> list[str]:
    """``prefix`` + one run id each: the suite and its users live for the whole session."""
    run = uuid.uuid4().hex[:6]
    return [f"{prefix}{run}" for prefix in prefixes]


@contextmanager
def open_pages(browser: Browser, count: int, *, csp_errors: bool = False) -> Iterator[Pages]:
    """``count`` pages, closed on the way out; with ``csp_errors`` the console's Content
    Security Policy reports count as errors too (they are no exceptions)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    contexts = [browser.new_context(viewport=VIEWPORT) for _ in range(count)]
    opened = Pages(contexts, [context.new_page() for context in contexts], [])

    def csp_report(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            opened.errors.append(message.text)

    for page in opened.pages:
        page.on("pageerror", lambda error: opened.errors.append(str(error)))
        if csp_errors:
            page.on("console", csp_report)
    try:
        yield opened
    finally:
        for context in contexts:
            context.close()


@contextmanager
def users(
    browser: Browser, gateway: str, *prefixes: str, csp_errors: bool = False
) -> Iterator[Pages]:
    """A page per prefix with a new user registered on it, in order; ``.names`` are theirs."""
    with open_pages(browser, len(prefixes), csp_errors=csp_errors) as opened:
        opened.names = names(*prefixes)
        for page, name in zip(opened.pages, opened.names, strict=True):
            register(page, gateway, name)
        yield opened


def register(page: Page, gateway: str, username: str) -> None:
    _enter(page, gateway, username, "register")


def log_in(page: Page, gateway: str, username: str) -> None:
    _enter(page, gateway, username, "login")


def _enter(page: Page, gateway: str, username: str, button: str) -> None:
    """Open the page, fill the form and press ``button`` ("register" or "login")."""
    from playwright.sync_api import expect

    page.goto(f"{gateway}/")
    page.get_by_test_id("username").fill(username)
    page.get_by_test_id("password").fill(f"{username}-password")
    page.get_by_test_id(button).click()
    expect(page.locator("#status")).to_have_attribute("data-state", "online")


def open_chat(page: Page, peer: str) -> None:
    """Open the 1:1 conversation with ``peer`` by typing the username (and Enter)."""
    page.get_by_test_id("peer").fill(peer)
    page.get_by_test_id("peer").press("Enter")


def send(page: Page, text: str) -> None:
    """Send ``text`` in the open conversation with the Send button."""
    page.get_by_test_id("composer").fill(text)
    page.get_by_test_id("send").click()


def new_group(page: Page, name: str, members: str) -> None:
    """Create a group from the side panel's form; it is created and open."""
    from playwright.sync_api import expect

    page.locator("#new-group summary").click()
    page.locator("#group-name").fill(name)
    page.locator("#group-members").fill(members)
    page.locator("#group-name").press("Enter")
    expect(page.locator("#title")).to_have_text(name)
