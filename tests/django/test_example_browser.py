"""examples/django_chat in a real headless Chromium: two users, one room."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.helpers import chromium

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def enter_room(browser: Browser, base: str, username: str) -> Page:
    page = browser.new_context().new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{base}/accounts/login/?next=/room/lobby/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "chanlite-demo")
    page.click("main button")
    expect(page.locator("h1")).to_have_text("#lobby")
    expect(page.locator("#status")).to_have_text("connected")
    return page


def test_two_users_chat_in_a_browser(chat_site: dict[str, Any], browser: Browser) -> None:
    base = f"http://127.0.0.1:{chat_site['port']}"
    alice = enter_room(browser, base, "alice")
    bob = enter_room(browser, base, "bob")

    alice.fill("#text", "hello")  # typing...
    expect(bob.locator("#typing")).to_have_text("alice is typing...")
    alice.press("#text", "Enter")
    for page in (alice, bob):
        expect(page.locator("#log li").last).to_have_text("alice: hello")
    expect(bob.locator("#typing")).to_have_text("")

    bob.reload()  # history comes from the database on join
    expect(bob.locator("#status")).to_have_text("connected")
    expect(bob.locator("#log li").last).to_have_text("alice: hello")

    bob.fill("footer input[name=text]", "cake in the kitchen")
    bob.click("footer button")  # a plain Django form POST
    expect(bob.locator(".flash")).to_contain_text("Announcement sent")
    expect(bob.locator("#status")).to_have_text("connected")
    expect(alice.locator("#log li.announcement")).to_have_text(
        "Announcement from bob: cake in the kitchen"
    )
