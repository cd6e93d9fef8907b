"""Layer events, groups and broadcast through the hub."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from chanlite import App, WebSocket
from chanlite.broadcast import BROADCAST, broadcast_event, encode_frame
from chanlite.testing import TestClient


def feed_app() -> App:
    app = App(layer="memory://")

    @app.websocket("/feed/{topic}")
    async def feed(ws: WebSocket, topic: str) -> None:
        await ws.accept()
        await ws.join(topic)
        ws.state.seen = 0
        await ws.send_json({"ready": ws.channel_name})
        async for _ in ws.iter_text():
            pass

    @feed.on("count")
    async def count(ws: WebSocket, event: dict[str, Any]) -> None:
        ws.state.seen += 1
        await ws.send_json({"n": event["n"], "seen": ws.state.seen})

    @feed.on("slow")
    async def slow(ws: WebSocket, event: dict[str, Any]) -> None:
        await asyncio.sleep(0.05)
        await ws.send_json({"slow": event["n"]})

    @feed.on("blocking")
    def blocking(ws: WebSocket, event: dict[str, Any]) -> None:
        # A plain def runs on a thread; it reports which thread it ran on.
        event["thread"].append(threading.get_ident())

    @feed.on("explode")
    async def explode(ws: WebSocket, event: dict[str, Any]) -> None:
        raise RuntimeError("event handler bug")

    return app


async def test_events_in_arrival_order_with_shared_state() -> None:
    app = feed_app()
    async with TestClient(app) as client:
        async with client.websocket("/feed/t") as ws:
            await ws.receive_json()
            for n in range(5):
                await app.group_send("t", {"type": "slow" if n % 2 else "count", "n": n})
            got = [await ws.receive_json() for _ in range(5)]
    assert got == [
        {"n": 0, "seen": 1},
        {"slow": 1},
        {"n": 2, "seen": 2},
        {"slow": 3},
        {"n": 4, "seen": 3},
    ]


async def test_broadcast_text_json_bytes() -> None:
    app = feed_app()
    async with TestClient(app) as client:
        async with client.websocket("/feed/b") as a, client.websocket("/feed/b") as b:
            await a.receive_json()
            await b.receive_json()
            await app.broadcast("b", text="plain")
            await app.broadcast("b", json={"x": 1})
            await app.broadcast("b", bytes=b"\x01\x02")
            for ws in (a, b):
                assert await ws.receive_text() == "plain"
                assert await ws.receive_json() == {"x": 1}
                assert await ws.receive_bytes() == b"\x01\x02"


async def test_broadcast_exclude_leaves_one_socket_out() -> None:
    app = feed_app()
    async with TestClient(app) as client:
        async with client.websocket("/feed/x") as a, client.websocket("/feed/x") as b:
            sender = (await a.receive_json())["ready"]
            await b.receive_json()
            await app.broadcast("x", text="not for a", exclude=sender)
            await app.broadcast("x", text="for both")
            assert await b.receive_text() == "not for a"
            assert await b.receive_text() == "for both"
            assert await a.receive_text() == "for both"


async def test_broadcast_needs_exactly_one_payload() -> None:
    app = feed_app()
    with pytest.raises(TypeError, match="exactly one of"):
        await app.broadcast("b")
    with pytest.raises(TypeError, match="exactly one of"):
        await app.broadcast("b", text="a", json={})
    with pytest.raises(TypeError, match="needs a str"):
        await app.broadcast("b", text=b"bytes")  # type: ignore[arg-type]


async def test_unhandled_event_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    app = feed_app()
    caplog.set_level(logging.WARNING, logger="chanlite")
    async with TestClient(app) as client:
        async with client.websocket("/feed/u") as ws:
            await ws.receive_json()
            await app.group_send("u", {"type": "mystery"})
            await app.group_send("u", {"type": "count", "n": 1})
            assert await ws.receive_json() == {"n": 1, "seen": 1}
    assert app.stats.events_unhandled == 1
    assert any("No on('mystery') handler" in rec.getMessage() for rec in caplog.records)


async def test_an_unhandled_event_type_names_the_handled_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = feed_app()
    caplog.set_level(logging.WARNING, logger="chanlite")
    async with TestClient(app) as client:
        async with client.websocket("/feed/t") as ws:
            await ws.receive_json()
            await app.group_send("t", {"type": "cuont", "n": 1})
            await app.group_send("t", {"type": "count", "n": 1})
            assert await ws.receive_json() == {"n": 1, "seen": 1}
    messages = [rec.getMessage() for rec in caplog.records if "No on(" in rec.getMessage()]
    assert messages == [
        "No on('cuont') handler on feed_app.<locals>.feed; event dropped. Did you mean "
        "'count'? It handles: blocking, count, explode, slow."
    ]


def channels_named_app() -> App:
    """A handler that takes ``chat.message``; ``room_notice`` spelled the Channels way."""
    app = App(layer="memory://")

    @app.websocket("/room/{name}")
    async def room(ws: WebSocket, name: str) -> None:
        await ws.accept()
        await ws.join(name)
        await ws.send_json({"ready": True})
        async for _ in ws.iter_text():
            pass

    @room.on("chat.message")
    async def chat_message(ws: WebSocket, event: dict[str, Any]) -> None:
        await ws.send_json({"message": event["message"]})

    @room.on("room_notice")
    @room.on("room.notice")  # stacked: one function takes both spellings
    async def room_notice(ws: WebSocket, event: dict[str, Any]) -> None:
        await ws.send_json({"notice": event["type"]})

    return app


async def test_an_event_typed_the_channels_way_is_dropped_with_the_reason_and_the_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Channels calls chat_message() for "chat_message" and "chat.message" alike; chanlite
    matches exactly, and the drop says so instead of looking like a typo."""
    app = channels_named_app()
    caplog.set_level(logging.WARNING, logger="chanlite")
    async with TestClient(app) as client:
        async with client.websocket("/room/lobby") as ws:
            await ws.receive_json()
            await app.group_send("lobby", {"type": "chat_message", "message": "old style"})
            await app.group_send("lobby", {"type": "chat.message", "message": "new style"})
            assert await ws.receive_json() == {"message": "new style"}
    assert app.stats.events_unhandled == 1
    messages = [rec.getMessage() for rec in caplog.records if "No on(" in rec.getMessage()]
    assert messages == [
        "No on('chat_message') handler on channels_named_app.<locals>.room; event dropped. "
        "It handles 'chat.message', which Django Channels treats as the same type: a "
        "Channels consumer's method chat_message() gets both 'chat_message' and "
        "'chat.message', while chanlite matches the type exactly. Send 'chat.message', or "
        "also register @room.on('chat_message') (on() decorators stack on one function). "
        "It handles: chat.message, room.notice, room_notice."
    ]


async def test_stacked_on_decorators_take_both_spellings() -> None:
    app = channels_named_app()
    async with TestClient(app) as client:
        async with client.websocket("/room/hall") as ws:
            await ws.receive_json()
            await app.group_send("hall", {"type": "room_notice"})
            await app.group_send("hall", {"type": "room.notice"})
            assert await ws.receive_json() == {"notice": "room_notice"}
            assert await ws.receive_json() == {"notice": "room.notice"}
    assert app.stats.events_unhandled == 0


@pytest.mark.parametrize(
    ("event_type", "advice"),
    [
        ("websocket.receive", "client frames are not layer events"),
        ("websocket_receive", "client frames are not layer events"),
        ("websocket.disconnect", "groups joined with ws.join() are left on their own"),
        ("websocket.connect", "the handler itself runs when a client connects"),
        ("http_request", "an HTTP request is answered by an @app.http(path) handler"),
    ],
)
def test_on_an_asgi_message_type_is_refused_with_where_chanlite_handles_it(
    event_type: str, advice: str
) -> None:
    """A Channels consumer's websocket_receive() etc. have no layer-event equivalent: an
    on() for them would never run, so registering one is an error, not a silent no-op."""
    app = App(layer="memory://")

    @app.websocket("/ws")
    async def chat(ws: WebSocket) -> None:
        await ws.accept()

    with pytest.raises(ValueError, match="would never run") as info:
        chat.on(event_type)(lambda ws, event: None)
    assert f"chat.on({event_type!r})" in str(info.value)
    assert advice in str(info.value)
    assert "Django Channels" in str(info.value)
    assert chat.events == {}


async def test_sync_on_handler_runs_on_a_thread() -> None:
    app = feed_app()
    threads: list[int] = []
    async with TestClient(app) as client:
        async with client.websocket("/feed/s") as ws:
            await ws.receive_json()
            await app.group_send("s", {"type": "blocking", "thread": threads})
            await app.group_send("s", {"type": "count", "n": 9})
            assert (await ws.receive_json())["n"] == 9
    assert threads and threads[0] != threading.get_ident()


async def test_event_handler_exception_closes_1011() -> None:
    app = feed_app()
    async with TestClient(app, raise_server_exceptions=False) as client:
        async with client.websocket("/feed/e") as ws:
            await ws.receive_json()
            await app.group_send("e", {"type": "explode"})
            with pytest.raises(Exception):  # noqa: B017 - WebSocketDisconnect
                await ws.receive_json()
            assert ws.close_code == 1011


async def test_group_send_fan_out_is_one_dispatch_per_process() -> None:
    app = feed_app()
    async with TestClient(app) as client:
        sockets = [client.websocket("/feed/many") for _ in range(20)]
        sessions = [await s.__aenter__() for s in sockets]
        try:
            for s in sessions:
                await s.receive_json()
            delivered_before = app.stats.events_delivered
            await app.group_send("many", {"type": "count", "n": 1})
            for s in sessions:
                assert (await s.receive_json())["n"] == 1
            assert app.stats.events_delivered - delivered_before == 20
        finally:
            for s in reversed(sockets):
                await s.__aexit__(None, None, None)


def test_broadcast_frame_encoding() -> None:
    assert encode_frame(broadcast_event(text="hi")) == b"\x81\x02hi"
    assert encode_frame(broadcast_event(bytes=b"\x00")) == b"\x82\x01\x00"
    assert broadcast_event(json={"a": "é"}) == {"type": BROADCAST, "text": '{"a":"é"}'}


async def test_fast_path_writes_encoded_frame_once() -> None:
    """With the server's frame extension, a broadcast is encoded once for all members."""
    app = feed_app()
    written: list[bytes] = []

    def writer(frame: bytes) -> bool:
        written.append(frame)
        return True

    async with TestClient(app) as client:
        async with client.websocket("/feed/f") as a, client.websocket("/feed/f") as b:
            await a.receive_json()
            await b.receive_json()
            for ws in app.hub.connections.values():
                assert isinstance(ws, WebSocket)
                ws.frame_writer = writer  # what accept() caches from the server's extension
            await app.broadcast("f", text="fast")
            for _ in range(100):
                if len(written) == 2:
                    break
                await asyncio.sleep(0.01)
    assert written == [b"\x81\x04fast", b"\x81\x04fast"]
    assert written[0] is written[1]  # the very same bytes object: encoded once
    assert app.stats.broadcast_frames == 2


async def test_app_served_twice_gets_events_both_times() -> None:
    # Each lifespan closes the layer; the next one builds a new layer with a new client_id.
    app = feed_app()
    for round_ in range(2):
        async with TestClient(app) as client:
            async with client.websocket("/feed/again") as ws:
                await ws.receive_json()
                await app.group_send("again", {"type": "count", "n": round_})
                assert (await ws.receive_json())["n"] == round_
