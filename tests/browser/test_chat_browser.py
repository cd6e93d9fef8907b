"""The chat example in a real headless Chromium, served by `chanlite run --workers 2`.

Two users (separate browser contexts) in one room on the SQLite layer, their pages served
by different worker processes (one reconnects until the kernel hands it to the other
worker): messages, typing, who is in the room, `chanlite send` from outside, a latecomer
who sees the last messages, a worker killed with SIGKILL and a server restart, both of
which the pages ride out by reconnecting and filling their gap from the room's history
(which the restart keeps). The screenshot and the server's log stay in the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from tests.browser.helpers import EXPECT_TIMEOUT_MS, ChanliteServer, artifacts_on_failure, run_cli

TIMEOUT_MS = EXPECT_TIMEOUT_MS
# The page's backoff tops out at 8 s (plus a little), so a restart is noticed within that.
RECONNECT_MS = 25_000
pytestmark = pytest.mark.timeout(150)


def open_chat(context: BrowserContext, url: str, errors: list[str]) -> Page:
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda exc: errors.append(f"{url}: {exc}"))
    page.goto(url)
    return page


def worker_of(page: Page) -> str:
    """Wait until the page is connected; the pid of the worker serving its socket."""
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "open")
    worker = status.get_attribute("data-worker")
    assert worker, "the welcome frame names the worker process"
    return worker


def last_message(page: Page) -> str:
    return page.locator('#messages li[data-kind="message"]').last.inner_text()


def notices(page: Page, text: str) -> Locator:
    """The page's own connection notices containing *text*."""
    return page.locator('#messages li[data-kind="system"]', has_text=text)


def expect_message(page: Page, nick: str, text: str, timeout: int = TIMEOUT_MS) -> None:
    line = page.locator(f'#messages li[data-kind="message"][data-nick="{nick}"]', has_text=text)
    expect(line).to_have_count(1, timeout=timeout)


def people(page: Page) -> Locator:
    return page.locator("#people .person")


def expect_people(page: Page, *nicks: str) -> None:
    expect(people(page)).to_have_text(sorted(nicks))


def test_chat_across_workers_cli_and_restart(browser: Browser, tmp_path: Path) -> None:
    layer = f"sqlite:///{tmp_path / 'chat.db'}"
    server = ChanliteServer(
        "examples/chat/app.py:app", "--workers", "2", "--layer", layer, log=tmp_path / "server.log"
    )
    errors: list[str] = []
    pages: dict[str, Page] = {}
    with server, artifacts_on_failure(tmp_path, pages, server):
        ann = pages["ann"] = open_chat(
            browser.new_context(), f"{server.url}/room/lobby?nick=ann", errors
        )
        ann_worker = worker_of(ann)
        bob_url = f"{server.url}/room/lobby?nick=bob"
        bob = pages["bob"] = open_chat(browser.new_context(), bob_url, errors)
        bob_worker = worker_of(bob)
        # Each worker listens on its own SO_REUSEPORT socket and the kernel picks one per
        # connection by hashing its addresses, so a new context (new source ports) lands
        # on either worker with even odds: reopen until bob's socket is on the other one.
        reopened = 0
        while bob_worker == ann_worker and reopened < 30:
            bob.context.close()
            bob = pages["bob"] = open_chat(browser.new_context(), bob_url, errors)
            bob_worker = worker_of(bob)
            reopened += 1
        if reopened:
            print(f"\nbob reached the other worker after {reopened} reopen(s)")
        assert bob_worker != ann_worker, f"both pages on worker {ann_worker}\n{server.tail()}"
        expect(bob.locator("#who")).to_have_text("bob")
        expect(
            ann.locator('#messages li[data-kind="joined"]', has_text="bob joined")
        ).not_to_have_count(0)

        # A line typed in one page shows in the other (and in its own, marked as mine).
        ann.locator("#text").fill("hello from ann")
        ann.locator("#text").press("Enter")
        expect_message(bob, "ann", "hello from ann")
        expect_message(ann, "ann", "hello from ann")
        expect(ann.locator("li.mine", has_text="hello from ann")).to_have_count(1)
        expect(ann.locator("#text")).to_have_value("")

        # Typing shows in the other page, and goes away when the line arrives.
        bob.locator("#text").press_sequentially("hi ann")
        expect(ann.locator("#typing")).to_have_text("bob is typing\u2026")
        expect(bob.locator("#typing")).to_have_text("")
        bob.locator("#send").click()
        expect_message(ann, "bob", "hi ann")
        expect(ann.locator("#typing")).to_have_text("")

        # Another program on the same layer talks to the room: an event with an on-handler,
        # and a raw text frame (shown as a system notice).
        event = {"type": "chat.message", "nick": "ops", "text": "deploy at noon"}
        run_cli("send", "--layer", layer, "room.lobby", json.dumps(event))
        run_cli("send", "--layer", layer, "--broadcast-text", "<b>plain</b> words", "room.lobby")
        for page in (ann, bob):
            expect_message(page, "ops", "deploy at noon")
            raw = page.locator('#messages li[data-kind="raw"]')
            expect(raw).to_have_count(1)
            expect(raw).to_contain_text("<b>plain</b> words")  # shown as text, not markup

        # Who is here, on both pages (served by two processes).
        for page in (ann, bob):
            expect_people(page, "ann", "bob")
        # A latecomer sees the conversation so far (the room keeps its last messages),
        # and is seen arriving and leaving.
        cat = pages["cat"] = open_chat(
            browser.new_context(), f"{server.url}/room/lobby?nick=cat", errors
        )
        worker_of(cat)
        expect_message(cat, "ann", "hello from ann")
        expect_message(cat, "bob", "hi ann")
        expect_people(cat, "ann", "bob", "cat")
        expect_people(ann, "ann", "bob", "cat")
        cat.context.close()
        del pages["cat"]
        expect(ann.locator('#messages li[data-kind="left"]', has_text="cat left")).to_have_count(1)
        expect_people(ann, "ann", "bob")

        shot = tmp_path / "chat.png"
        ann.screenshot(path=str(shot))
        print(f"\nscreenshot of the chat page: {shot}")

        # A worker dies (kill -9): its page reconnects to a live worker, the other page does
        # not notice, and the room works both ways (the supervisor starts a replacement).
        os.kill(int(ann_worker), signal.SIGKILL)
        # Said while ann's page has no socket: it arrives once, live or from the history.
        bob.locator("#text").fill("while ann reconnects")
        bob.locator("#text").press("Enter")
        expect(ann.locator("#status")).not_to_have_attribute(
            "data-worker", ann_worker, timeout=RECONNECT_MS
        )
        worker_of(ann)
        expect_message(ann, "bob", "while ann reconnects")
        expect(notices(ann, "Reconnected")).to_have_count(1)
        ann.locator("#text").fill("after a crash")
        ann.locator("#text").press("Enter")
        expect_message(bob, "ann", "after a crash")
        bob.locator("#text").fill("still here")
        bob.locator("#text").press("Enter")
        expect_message(ann, "bob", "still here")
        expect(notices(bob, "Connection lost")).to_have_count(0)

        # Stop the server: both pages notice and start retrying.
        port = server.port
        server.stop()
        for page, outages in ((ann, 2), (bob, 1)):
            expect(page.locator("#status")).to_have_attribute("data-state", "waiting")
            expect(page.locator("#send")).to_be_disabled()
            expect(notices(page, "Connection lost")).to_have_count(outages)

        # A line typed while offline waits in the field rather than vanishing.
        bob.locator("#text").fill("are we back?")
        bob.locator("#text").press("Enter")
        expect(bob.locator("#text")).to_have_value("are we back?")
        # Another program writes into the room's history while no server runs: both pages
        # get it when they are back, once (they resume from their last position).
        kept = f"{layer}?history=room.*:100"
        during = {"type": "chat.message", "nick": "ops", "text": "said during the restart"}
        run_cli("send", "--layer", kept, "room.lobby", json.dumps(during))

        # Same port again: the pages reconnect on their own and the chat keeps working.
        server.start(port=port)
        for page, outages in ((ann, 2), (bob, 1)):
            expect(page.locator("#status")).to_have_attribute(
                "data-state", "open", timeout=RECONNECT_MS
            )
            expect(notices(page, "Reconnected")).to_have_count(outages)
        for page in (ann, bob):
            expect_message(page, "ops", "said during the restart")
            expect_message(page, "ann", "hello from ann")  # still once: nothing replayed twice
            expect(page.locator('#messages li[data-kind="gap"]')).to_have_count(0)
        bob.locator("#send").click()
        expect_message(ann, "bob", "are we back?")
        expect_message(bob, "bob", "are we back?")
        # The history survived the restart: a new page sees what was said before it.
        dan = pages["dan"] = open_chat(
            browser.new_context(), f"{server.url}/room/lobby?nick=dan", errors
        )
        worker_of(dan)
        for nick, text in (("ann", "hello from ann"), ("ops", "said during the restart")):
            expect_message(dan, nick, text)
        dan.context.close()
        del pages["dan"]
        run_cli("send", "--layer", layer, "room.lobby", json.dumps({**event, "text": "back"}))
        for page in (ann, bob):
            expect_message(page, "ops", "back")

        ann.screenshot(path=str(tmp_path / "chat-after-restart.png"))

        # Leaving is announced, and the list of who is here follows.
        bob.context.close()
        expect(
            ann.locator('#messages li[data-kind="left"]', has_text="bob left")
        ).not_to_have_count(0)
        expect_people(ann, "ann")

    assert not errors, f"uncaught errors in the page: {errors}"
    assert last_message(ann).endswith("back")


def test_nickname_prompt_and_bad_room(browser: Browser, tmp_path: Path) -> None:
    """With no ?nick= the page asks for one; a bad room name is explained, not retried."""
    server = ChanliteServer("examples/chat/app.py:app", log=tmp_path / "server.log")
    errors: list[str] = []
    pages: dict[str, Page] = {}
    with server, artifacts_on_failure(tmp_path, pages, server):
        context = browser.new_context()
        page = pages["prompt"] = open_chat(context, f"{server.url}/", errors)
        dialog = page.locator("#nick-dialog")
        expect(dialog).to_be_visible()
        expect(page.locator("#status")).to_have_attribute("data-state", "idle")
        page.locator("#nick-input").fill("  ada  ")
        page.locator("#nick-join").click()
        expect(dialog).to_be_hidden()
        worker_of(page)
        expect(page.locator("#who")).to_have_text("ada")
        expect(page.locator("#room")).to_have_text("#lobby")
        page.locator("#text").fill("first!")
        page.locator("#text").press("Enter")
        expect_message(page, "ada", "first!")

        # The name is remembered for the next visit, in another room.
        other = open_chat(context, f"{server.url}/room/side-room", errors)
        worker_of(other)
        expect(other.locator("#who")).to_have_text("ada")
        expect(other.locator("#room")).to_have_text("#side-room")
        expect(other.locator('#messages li[data-kind="message"]')).to_have_count(0)

        bad = open_chat(context, f"{server.url}/room/no%20spaces", errors)
        expect(bad.locator("#status")).to_have_attribute("data-state", "failed")
        expect(bad.locator('#messages li[data-kind="error"]')).to_contain_text("not a room name")
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
