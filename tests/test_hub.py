"""The hub: the one layer reader, delivery, backpressure and what it counts and logs."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import pytest
from websockets.asyncio.client import connect

from chanlite import App, WebSocket, WebSocketDisconnect
from chanlite.hub import Hub
from chanlite.layers.base import Event
from chanlite.layers.memory import MemoryLayer
from chanlite.testing import TestClient
from tests.server.conftest import running


class FlakyLayer(MemoryLayer):
    """A memory layer whose ``receive_local`` fails *failures* times, then recovers."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def receive_local(self) -> tuple[Sequence[str], Event]:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("layer backend unreachable")
        return await super().receive_local()


def feed_app(layer: Any = "memory://", **options: Any) -> App:
    app = App(layer=layer, **options)

    @app.websocket("/feed")
    async def feed(ws: WebSocket) -> None:
        await ws.accept()
        await ws.join("feed")
        await ws.send_text("ready")
        async for _ in ws.iter_text():
            pass

    @feed.on("note")
    async def note(ws: WebSocket, event: dict[str, Any]) -> None:
        await ws.send_text(str(event["n"]))

    @feed.on("slow")
    async def slow(ws: WebSocket, event: dict[str, Any]) -> None:
        await asyncio.sleep(0.05)
        await ws.send_text(f"slow {event['n']}")

    return app


async def test_a_broken_layer_logs_once_then_once_on_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = feed_app(FlakyLayer(failures=4))
    caplog.set_level(logging.DEBUG, logger="chanlite.hub")
    async with TestClient(app) as client:
        async with client.websocket("/feed") as ws:
            assert await ws.receive_text() == "ready"
            await app.group_send("feed", {"type": "note", "n": 1})
            assert await ws.receive_text(timeout=10) == "1"  # delivered once recovered
    assert app.stats.layer_errors == 4
    hub_records = [rec for rec in caplog.records if rec.name == "chanlite.hub"]
    errors = [rec for rec in hub_records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "layer backend unreachable" in str(errors[0].exc_info[1])
    recovered = [rec for rec in hub_records if rec.levelno == logging.WARNING]
    assert len(recovered) == 1
    assert recovered[0].getMessage().startswith("Channel layer <tests.test_hub.FlakyLayer")
    assert recovered[0].getMessage().endswith("and 4 failed calls)")
    assert all(rec.exc_info is None for rec in hub_records if rec is not errors[0])


async def test_a_refused_broadcast_frame_is_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A frame the server refuses (its socket is closing) is undeliverable, never silent."""
    app = feed_app()
    caplog.set_level(logging.DEBUG, logger="chanlite.hub")

    def closing_socket(frame: bytes) -> bool:
        return False

    async with TestClient(app) as client:
        async with client.websocket("/feed") as ws:
            await ws.receive_text()
            (member,) = app.hub.connections.values()
            assert isinstance(member, WebSocket)
            member.frame_writer = closing_socket
            await app.broadcast("feed", text="lost")
            await app.group_send("feed", {"type": "note", "n": 2})  # after the frame
            assert await ws.receive_text() == "2"
    assert app.stats.events_undeliverable == 1
    assert app.stats.broadcast_frames == 0
    assert any("refused" in rec.getMessage() for rec in caplog.records)


async def test_a_broadcast_behind_pending_events_keeps_its_place() -> None:
    app = feed_app()
    written: list[bytes] = []
    async with TestClient(app) as client:
        async with client.websocket("/feed") as ws:
            await ws.receive_text()
            (member,) = app.hub.connections.values()
            assert isinstance(member, WebSocket)
            member.frame_writer = lambda frame: bool(written.append(frame)) or True
            await app.group_send("feed", {"type": "slow", "n": 1})
            await app.broadcast("feed", text="after")
            assert await ws.receive_text() == "slow 1"
            assert await ws.receive_text() == "after"  # queued, not written past the event
    assert written == []


async def test_max_pending_events_bounds_the_queue_of_a_busy_handler() -> None:
    """A handler behind on its events holds the reader back (bounded), losing nothing."""
    app = feed_app(max_pending_events=3)
    assert app.hub.max_pending("x") == 3
    async with TestClient(app) as client:
        async with client.websocket("/feed") as ws:
            await ws.receive_text()
            for n in range(10):
                await app.group_send("feed", {"type": "slow", "n": n})
            got = [await ws.receive_text(timeout=10) for _ in range(10)]
    assert got == [f"slow {n}" for n in range(10)]
    assert app.stats.slow_consumers == 0


def test_max_pending_defaults_to_the_layer_capacity() -> None:
    hub = Hub(MemoryLayer(capacity=7, channel_capacity={"big.*": 50}))
    assert hub.max_pending("ws.x!1") == 7
    assert hub.max_pending("big.x!1") == 50
    with pytest.raises(ValueError):
        Hub(max_pending_events=0)


def test_the_old_names_still_work_with_a_warning() -> None:
    app = App()
    with pytest.warns(DeprecationWarning, match="App.hub"):
        assert app.dispatcher is app.hub
    with pytest.warns(DeprecationWarning, match="chanlite.broadcast"):
        from chanlite.dispatcher import BROADCAST  # noqa: F401
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert app.stats is app.hub.stats
        assert app.stats.broadcast_dropped == 0


async def test_a_handler_stuck_with_a_full_queue_gets_the_slow_consumer_policy(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The reader waits for a busy connection only so long, then closes it (1013)."""
    monkeypatch.setattr("chanlite.hub.ROOM_WAIT", 0.2)
    app = feed_app(max_pending_events=2)
    stuck = asyncio.Event()

    @app.websocket("/stuck")
    async def stuck_feed(ws: WebSocket) -> None:
        await ws.accept()
        await ws.join("stuck")
        await ws.send_text("ready")
        async for _ in ws.iter_text():
            pass

    @stuck_feed.on("note")
    async def never_done(ws: WebSocket, event: dict[str, Any]) -> None:
        stuck.set()
        await asyncio.sleep(3600)

    caplog.set_level(logging.WARNING, logger="chanlite")
    async with TestClient(app) as client:
        async with client.websocket("/feed") as other, client.websocket("/stuck") as ws:
            await other.receive_text()
            await ws.receive_text()
            for n in range(4):  # 1 being handled + 2 queued + 1 that does not fit
                await app.group_send("stuck", {"type": "note", "n": n})
            await stuck.wait()
            await app.group_send("feed", {"type": "note", "n": 7})
            assert await other.receive_text(timeout=10) == "7"  # the reader moved on
            with pytest.raises(WebSocketDisconnect):
                await ws.receive_text(timeout=10)
            assert (ws.close_code, ws.close_reason) == (1013, "slow consumer")
    assert app.stats.slow_consumers == 1
    assert app.stats.events_undeliverable >= 2
    warnings = [rec for rec in caplog.records if "slow consumer" in rec.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


async def test_a_client_that_does_not_read_is_closed_at_once_without_holding_others() -> None:
    """Real sockets: the member's handler waits on a client that reads nothing, so
    when its queue is full it is closed (1013) and the reader never waits for it."""
    app = feed_app()
    async with running(app) as server:
        port = server.bound_port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /feed HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.transport.pause_reading()  # from here on the client reads nothing
        async with connect(
            f"ws://127.0.0.1:{port}/feed", compression=None, max_size=None
        ) as keeps_up:
            assert await keeps_up.recv() == "ready"
            big = "x" * 100_000
            for n in range(300):
                await app.group_send("feed", {"type": "note", "n": f"{n} {big}"})
                got = await asyncio.wait_for(keeps_up.recv(), 10)
                assert got.startswith(f"{n} ")
        writer.close()
    assert app.stats.slow_consumers == 1
    assert app.stats.events_undeliverable > 0


async def test_a_connection_that_ends_while_the_reader_waits_for_it_frees_the_reader(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = feed_app(max_pending_events=1)
    busy = asyncio.Event()

    @app.websocket("/busy")
    async def busy_feed(ws: WebSocket) -> None:
        await ws.accept()
        await ws.join("busy")
        await ws.send_text("ready")
        async for _ in ws.iter_text():
            pass

    @busy_feed.on("note")
    async def working(ws: WebSocket, event: dict[str, Any]) -> None:
        busy.set()
        await asyncio.sleep(3600)

    caplog.set_level(logging.WARNING, logger="chanlite")
    async with TestClient(app) as client:
        async with client.websocket("/feed") as other:
            await other.receive_text()
            async with client.websocket("/busy") as ws:
                await ws.receive_text()
                for n in range(3):  # handled, queued, and one the reader waits to queue
                    await app.group_send("busy", {"type": "note", "n": n})
                await busy.wait()
            # The busy connection ended: the reader goes on at once, with no 1013 for it.
            await app.group_send("feed", {"type": "note", "n": 9})
            assert await other.receive_text(timeout=10) == "9"
    assert app.stats.slow_consumers == 0
    assert not [rec for rec in caplog.records if "slow consumer" in rec.getMessage()]


async def test_tight_loops_of_events_and_broadcasts_reach_a_reading_client_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1,000 sends with no yield in between: the layer holds the sender back while the
    hub and the connection drain, instead of dropping to warnings."""
    app = feed_app()
    caplog.set_level(logging.INFO, logger="chanlite")
    async with running(app) as server:
        layer = app.layer
        url = f"ws://127.0.0.1:{server.bound_port}/feed"
        async with connect(url, compression=None) as client:
            assert await client.recv() == "ready"
            for n in range(1000):
                await app.broadcast("feed", text=f"b{n}")
            got = [await asyncio.wait_for(client.recv(), 10) for _ in range(1000)]
            assert got == [f"b{n}" for n in range(1000)]
            for n in range(1000):
                await app.group_send("feed", {"type": "note", "n": n})
            got = [await asyncio.wait_for(client.recv(), 10) for _ in range(1000)]
            assert got == [str(n) for n in range(1000)]
    assert layer.dropped == 0
    assert app.stats.slow_consumers == 0
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]


class DownLayer(MemoryLayer):
    """A memory layer whose group calls fail as a backend that went away does."""

    down = True

    async def group_send(self, group: str, message: Event) -> None:
        if self.down:
            from chanlite.layers import LayerUnavailable

            raise LayerUnavailable("backend at test://down is unreachable")
        await super().group_send(group, message)


async def test_an_outage_is_one_line_for_many_requests_and_sockets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer = DownLayer()
    app = App(layer=layer)

    @app.http("/notify")
    async def notify(request: Any) -> str:
        await app.group_send("room", {"type": "note"})
        return "sent"

    @app.websocket("/ws")
    async def ws_notify(ws: WebSocket) -> None:
        await ws.accept()
        await ws.group_send("room", {"type": "note"})
        await ws.send_text("sent")

    caplog.set_level(logging.DEBUG, logger="chanlite")
    async with TestClient(app) as client:
        for _ in range(3):
            r = await client.get("/notify")
            assert (r.status_code, r.text) == (
                503,
                "Service Unavailable: channel layer unavailable",
            )
            async with client.websocket("/ws") as ws:
                with pytest.raises(WebSocketDisconnect) as closed:
                    await ws.receive_text()
                assert (closed.value.code, closed.value.reason) == (
                    1011,
                    "channel layer unavailable",
                )
        layer.down = False
        assert (await client.get("/notify")).text == "sent"
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in lines] == ["ERROR", "WARNING"]
    assert "is unavailable: LayerUnavailable: backend at test://down" in lines[0].getMessage()
    assert "is available again (after" in lines[1].getMessage()
    assert "and 6 failed calls)" in lines[1].getMessage()
    assert all(r.exc_info is None for r in lines)
    assert app.stats.layer_errors == 6
