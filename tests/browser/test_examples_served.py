"""The small examples, each served by a real `chanlite run` and used from a real browser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.helpers import ChanliteServer

pytestmark = pytest.mark.timeout(90)

# Resolves with the first *count* text frames of a WebSocket, after sending *send* (if any).
WS_FRAMES = """([url, send, count]) => new Promise((resolve, reject) => {
    const frames = [];
    const ws = new WebSocket(url);
    const timer = setTimeout(() => reject(new Error("timed out; got " + frames)), 10000);
    ws.onopen = () => { if (send !== null) ws.send(send); };
    ws.onmessage = (e) => {
        frames.push(e.data);
        if (frames.length === count) { clearTimeout(timer); ws.close(); resolve(frames); }
    };
    ws.onerror = () => reject(new Error("WebSocket error"));
})"""


def same_origin_page(browser: Browser, url: str) -> Page:
    """A page on the server's origin (the body may be a 404; only the origin matters)."""
    page = browser.new_page()
    page.goto(url + "/")
    return page


def ws_url(http_url: str, path: str) -> str:
    return "ws" + http_url.removeprefix("http") + path


def ws_frames(page: Page, url: str, send: str | None, count: int) -> list[Any]:
    frames = page.evaluate(WS_FRAMES, [url, send, count])
    assert isinstance(frames, list)
    return frames


def test_echo_served(browser: Browser, tmp_path: Path) -> None:
    with ChanliteServer("examples/echo.py:app", log=tmp_path / "server.log") as server:
        page = same_origin_page(browser, server.url)
        assert ws_frames(page, ws_url(server.url, "/ws"), "ping \u2603", 1) == ["ping \u2603"]
        page.close()


def test_ticker_served(browser: Browser, tmp_path: Path) -> None:
    server = ChanliteServer(
        "examples/ticker.py:app", log=tmp_path / "server.log", env={"TICKER_INTERVAL": "0.1"}
    )
    with server:
        page = same_origin_page(browser, server.url)
        ticks = [
            json.loads(f)["tick"] for f in ws_frames(page, ws_url(server.url, "/ticks"), None, 3)
        ]
        assert ticks[1:] == [ticks[0] + 1, ticks[0] + 2]
        page.close()


# Opens an EventSource on /events and POSTs to /publish until a published item arrives:
# publishing before the stream has subscribed would be lost, by design of a live feed.
SSE_ROUND_TRIP = """(base) => new Promise((resolve, reject) => {
    const source = new EventSource(base + "/events");
    const timer = setTimeout(() => { source.close(); reject(new Error("no event")); }, 15000);
    let n = 0;
    let publisher = null;
    source.onopen = () => {
        const publish = () => fetch(base + "/publish", {method: "POST", body: "item " + (++n)});
        publish();
        publisher = setInterval(publish, 250);
    };
    source.onmessage = (e) => {
        clearTimeout(timer);
        clearInterval(publisher);
        source.close();
        resolve({data: e.data, published: n});
    };
    source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) reject(new Error("stream closed"));
    };
})"""


def test_sse_served_across_workers(browser: Browser, tmp_path: Path) -> None:
    """The stream and the publisher may sit in different workers: the layer joins them."""
    layer = f"sqlite:///{tmp_path / 'sse.db'}"
    server = ChanliteServer(
        "examples/sse.py:app", "--workers", "2", "--layer", layer, log=tmp_path / "server.log"
    )
    with server:
        page = same_origin_page(browser, server.url)
        result = page.evaluate(SSE_ROUND_TRIP, server.url)
        page.close()  # an open stream would hold up the server's graceful shutdown
        item = json.loads(result["data"])
        assert item.startswith("item ")
        assert 1 <= int(item.removeprefix("item ")) <= result["published"]
