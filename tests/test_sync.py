from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from chanlite import App, WebSocket, sync
from chanlite.testing import TestClient


def app_with_feed() -> App:
    app = App()

    @app.websocket("/feed")
    async def feed(ws: WebSocket) -> None:
        await ws.accept()
        await ws.join("feed")
        await ws.send_text("ready")
        async for _ in ws.iter_text():
            pass

    @feed.on("note")
    async def note(ws: WebSocket, event: dict[str, Any]) -> None:
        await ws.send_json(event["body"])

    return app


async def test_app_sync_from_a_thread_reaches_sockets() -> None:
    app = app_with_feed()
    async with TestClient(app) as client:
        async with client.websocket("/feed") as ws:
            assert await ws.receive_text() == "ready"

            def from_thread() -> None:
                app.sync.group_send("feed", {"type": "note", "body": {"from": "thread"}})
                app.sync.broadcast("feed", text="raw frame")

            await asyncio.to_thread(from_thread)
            assert await ws.receive_json() == {"from": "thread"}
            assert await ws.receive_text() == "raw frame"


async def test_sync_call_on_the_loop_is_refused() -> None:
    app = app_with_feed()
    async with TestClient(app) as client:
        async with client.websocket("/feed") as ws:
            await ws.receive_text()
            with pytest.raises(RuntimeError, match="await the async API"):
                app.sync.group_send("feed", {"type": "note", "body": {}})


def test_url_sender_uses_a_private_loop_thread() -> None:
    # No event loop in this test: the call works and leaves none behind in this thread.
    sync.send("memory://?capacity=5", "plain-channel", {"type": "hello"})
    layer, loop = sync.SyncSender("memory://?capacity=5").layer_and_loop()
    assert loop is not None and loop.is_running()
    message = sync.run(layer.receive("plain-channel"), loop)
    assert message == {"type": "hello"}
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    sync.close()


def test_sync_senders_are_thread_safe() -> None:
    url = "memory://?capacity=1000"
    threads = [
        threading.Thread(target=lambda i=i: sync.send(url, "many", {"type": "n", "i": i}))
        for i in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    layer, loop = sync.SyncSender(url).layer_and_loop()
    got = sorted(sync.run(layer.receive("many"), loop)["i"] for _ in range(20))
    assert got == list(range(20))
    sync.close()


def test_broadcast_argument_errors() -> None:
    with pytest.raises(TypeError, match="exactly one of"):
        sync.broadcast("memory://", "g")
