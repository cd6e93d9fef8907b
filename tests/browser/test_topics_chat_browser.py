"""The topics chat example (phoenix.js in the page) in a real headless Chromium.

Two users in one room on the SQLite layer: messages both ways, a server restart in the
middle of the chat that the pages ride out with nothing lost or shown twice (they rejoin
from the ref of the last message they saw; one of them is kept away until the other has
written, so what it missed reaches it only by that resume), the member list changing as
a tab closes, and a third user whose page has no WebSocket at all, on phoenix.js's
long-poll.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, WebSocketRoute, expect

from tests.browser.helpers import EXPECT_TIMEOUT_MS, REPO, ChanliteServer, artifacts_on_failure

EXAMPLE = REPO / "examples" / "topics_chat"
RECONNECT_MS = 30_000
LONGPOLL_EXPIRY_MS = 30_000
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module", autouse=True)
def phoenix_installed() -> None:
    """The example's own set-up: `npm ci` installs the phoenix package the page loads."""
    if (EXAMPLE / "node_modules" / ".package-lock.json").exists():
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"npm ci in {EXAMPLE} failed:\n{done.stdout}{done.stderr}")


def open_chat(context: BrowserContext, url: str, errors: list[str]) -> Page:
    page = context.new_page()
    page.set_default_timeout(EXPECT_TIMEOUT_MS)
    page.on("pageerror", lambda exc: errors.append(f"{url}: {exc}"))
    page.goto(url)
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    return page


def say(page: Page, text: str) -> None:
    page.locator("#text").fill(text)
    page.locator("#text").press("Enter")


def expect_line(page: Page, nick: str, text: str, timeout: int = EXPECT_TIMEOUT_MS) -> None:
    line = page.locator(f'#messages li[data-kind="message"][data-nick="{nick}"]', has_text=text)
    expect(line).to_have_count(1, timeout=timeout)


def expect_members(page: Page, *nicks: str, timeout: int = EXPECT_TIMEOUT_MS) -> None:
    expect(page.locator("#members li")).to_have_count(len(nicks), timeout=timeout)
    for nick in nicks:
        expect(page.locator(f'#members li[data-nick="{nick}"]')).to_have_count(1)


class Away:
    """Keeps one browser context from reaching the socket (WebSocket and long-poll) while
    ``held``; then lets its reconnects through to the server."""

    def __init__(self, context: BrowserContext) -> None:
        self.held = True
        self.kept_out = 0  # reconnect attempts turned away
        context.route_web_socket(re.compile(r"/socket/websocket"), self._websocket)
        context.route(re.compile(r"/socket/longpoll"), self._longpoll)

    def _websocket(self, ws: WebSocketRoute) -> None:
        if self.held:
            self.kept_out += 1
            ws.close(code=1001, reason="held away by the test")
        else:
            ws.connect_to_server()

    def _longpoll(self, route: Route) -> None:
        if self.held:
            self.kept_out += 1
            route.abort("connectionrefused")
        else:
            route.continue_()


def test_topics_chat_restart_presence_and_longpoll(browser: Browser, tmp_path: Path) -> None:
    layer = f"sqlite:///{tmp_path / 'topics.db'}"
    server = ChanliteServer(
        "examples/topics_chat/app.py:app", "--layer", layer, log=tmp_path / "server.log"
    )
    errors: list[str] = []
    pages: dict[str, Page] = {}
    with server, artifacts_on_failure(tmp_path, pages, server):
        room = f"{server.url}/?room=lobby&nick="
        ann = pages["ann"] = open_chat(browser.new_context(), room + "ann", errors)
        bob = pages["bob"] = open_chat(browser.new_context(), room + "bob", errors)
        for page in (ann, bob):
            expect_members(page, "ann", "bob")
        say(ann, "hello bob")
        say(bob, "hi ann")
        for page in (ann, bob):
            expect_line(page, "ann", "hello bob")
            expect_line(page, "bob", "hi ann")

        # The server restarts mid-chat. Ann's page reconnects and writes while Bob's is
        # still kept away; when Bob's gets through it rejoins from the ref of the last
        # message it saw and gets what it missed: nothing lost, nothing twice.
        away = Away(bob.context)
        port = server.port
        server.stop()
        for page in (ann, bob):
            expect(page.locator("#status")).to_have_attribute("data-state", "closed")
        server.start(port=port)
        expect(ann.locator("#status")).to_have_attribute("data-state", "open", timeout=RECONNECT_MS)
        say(ann, "after the restart")
        expect_line(ann, "ann", "after the restart", timeout=RECONNECT_MS)
        missed = bob.locator('#messages li[data-kind="message"]', has_text="after the restart")
        expect(missed).to_have_count(0)  # nothing reaches Bob's page while it is away
        assert away.kept_out > 0  # Bob's page did try, and was kept away
        away.held = False
        expect(bob.locator("#status")).to_have_attribute("data-state", "open", timeout=RECONNECT_MS)
        say(bob, "back again")
        for page in (ann, bob):
            expect_line(page, "bob", "back again", timeout=RECONNECT_MS)
            expect_line(page, "ann", "after the restart")
            expect_line(page, "ann", "hello bob")
            expect_line(page, "bob", "hi ann")
            expect(page.locator('#messages li[data-kind="message"]')).to_have_count(4)
            expect_members(page, "ann", "bob")

        # Bob's tab closes: ann's member list loses him. (phoenix.js may have come back
        # on long-poll after the restart: it falls back when a reconnect fails. A closed
        # long-poll client is noticed when its session expires, 1.5 poll windows.)
        bob.context.close()
        del pages["bob"]
        expect_members(ann, "ann", timeout=LONGPOLL_EXPIRY_MS)

        # A page without WebSocket talks over phoenix.js's long-poll.
        no_ws = browser.new_context()
        no_ws.add_init_script("delete window.WebSocket; window.WebSocket = undefined;")
        cy = pages["cy"] = open_chat(no_ws, room + "cy", errors)
        expect(cy.locator("#status")).to_have_attribute("data-transport", "longpoll")
        expect_line(cy, "ann", "after the restart")  # a latecomer sees the last messages
        expect_members(cy, "ann", "cy")
        expect_members(ann, "ann", "cy")
        say(cy, "from long-poll")
        say(ann, "to long-poll")
        for page in (ann, cy):
            expect_line(page, "cy", "from long-poll")
            expect_line(page, "ann", "to long-poll")
        cy.screenshot(path=str(tmp_path / "topics-chat.png"))
    assert errors == []
