from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from chanlite import App, WebSocket, WebSocketDisconnect, sync
from chanlite.layers.base import BlockingSends, Event
from chanlite.layers.memory import MemoryLayer
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


class BlockingLayer(MemoryLayer):
    """A memory layer that also offers blocking sends, recording the calling thread."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, int]] = []

    def send_blocking(self, channel: str, message: Event) -> None:
        self.calls.append(("send", channel, threading.get_ident()))

    def group_send_blocking(self, group: str, message: Event) -> None:
        self.calls.append(("group_send", group, threading.get_ident()))


async def test_a_layer_with_blocking_sends_is_called_in_the_callers_thread() -> None:
    layer = BlockingLayer()
    assert isinstance(layer, BlockingSends)
    app = App(layer=layer)

    @app.websocket("/ws")
    async def ws_handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.join("g")  # starts the hub's reader: the app is serving
        await ws.send_text("ready")
        async for _ in ws.iter_text():
            pass

    async with TestClient(app) as client:
        async with client.websocket("/ws") as ws:
            assert await ws.receive_text() == "ready"
            assert app.hub.running_loop() is asyncio.get_running_loop()

            def from_thread() -> int:
                app.sync.send("some.channel", {"type": "x"})
                app.sync.group_send("g", {"type": "x"})
                app.sync.broadcast("g", text="hi")
                return threading.get_ident()

            caller = await asyncio.to_thread(from_thread)
    # No hop to the App's loop: each call ran in the thread that made it.
    assert layer.calls == [
        ("send", "some.channel", caller),
        ("group_send", "g", caller),
        ("group_send", "g", caller),
    ]


def test_a_url_whose_layer_has_blocking_sends_needs_no_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer = BlockingLayer()
    monkeypatch.setattr(sync, "get_layer", lambda url: layer)
    sync.group_send("blocking://", "g", {"type": "x"})
    assert layer.calls == [("group_send", "g", threading.get_ident())]
    assert sync.SyncSender("blocking://").layer_and_loop() == (layer, None)
    sync.close()


def test_an_app_that_is_not_serving_sends_through_its_url() -> None:
    app = App(layer="memory://?capacity=3")
    assert app.hub.running_loop() is None
    layer, loop = sync.SyncSender(app).layer_and_loop()
    assert loop is not None and layer is not app.hub._layer
    with pytest.raises(RuntimeError, match="layer URL"):
        sync.SyncSender(App(layer=MemoryLayer())).layer_and_loop()
    sync.close()


def test_a_sender_on_a_layer_object_returns_who_it_reached() -> None:
    layer = MemoryLayer()
    sender = sync.SyncSender(layer)
    assert sender.group_send("g", {"type": "x"}) == 0
    sync.run(layer.group_add("g", "a"))
    sync.run(layer.group_add("g", "b"))
    assert sender.group_send("g", {"type": "x"}) == 2
    assert sender.broadcast("g", text="hi") == 2
    assert sender.send("a", {"type": "x"}) is None  # a plain channel: the layer cannot tell
    sync.run(layer.close())


async def test_a_plain_def_returning_a_coroutine_is_an_error_that_says_what_to_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # `def h(ws, event): return ws.send_json(...)` would lose the frame with only a
    # RuntimeWarning at garbage collection; it is refused with the fix instead.
    app = App()

    @app.websocket("/feed")
    async def feed(ws: WebSocket) -> None:
        await ws.join("feed")
        await ws.accept()
        async for _ in ws.iter_text():
            pass

    @feed.on("note")
    def note(ws: WebSocket, event: dict[str, Any]) -> Any:
        return ws.send_json(event["body"])

    @app.http("/page")
    def page(request: Any) -> Any:
        return asyncio.sleep(0)

    async with TestClient(app) as client:
        async with client.websocket("/feed") as ws:
            await app.group_send("feed", {"type": "note", "body": 1})
            with pytest.raises(WebSocketDisconnect) as closed:
                await ws.receive_json()
        assert closed.value.code == 1011  # as for any on handler that raises, logged:
        assert "note is a plain def and returned a coroutine" in caplog.text
        assert "chanlite.async_to_sync" in caplog.text
        with pytest.raises(TypeError, match="page is a plain def and returned a coroutine"):
            await client.get("/page")
