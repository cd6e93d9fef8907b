"""History messages dropped for a full connection are read back where they were dropped.

Over real sockets: a connection whose ``on`` handler is held (an asyncio.Event gate)
fills its queue, the hub's reader waits for it, the layer's inbox fills and the layer
drops the rest of a burst for it (counting the drops). The inbox leaves a
``history.missed`` notice in their place, so once the handler is let go the connection
reads the dropped run from the history -- with no further message sent to the group --
events and ``app.broadcast`` frames alike, in order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chanlite import App, WebSocket
from chanlite.layers.base import BaseLayer, LayerUnavailable
from chanlite.layers.memory import MemoryLayer
from chanlite.layers.streams import HistoryPage, StreamPosition
from tests.server.conftest import running

GROUP = "room.slow"


def gated_app(layer: str | BaseLayer, size: int = 100) -> tuple[App, asyncio.Event]:
    """A room whose ``on`` handler waits at a gate (closed until the test opens it), on a
    layer with room for 2 events per channel."""
    app = App(layer=layer)
    app.history("room.*", size=size)
    gate = asyncio.Event()

    @app.websocket("/slow")
    async def slow(ws: WebSocket) -> None:
        await ws.accept()
        await ws.join(GROUP)
        await ws.send_json({"joined": True})
        async for _ in ws.iter_text():
            pass

    @slow.on("chat.line")
    async def line(ws: WebSocket, event: dict[str, Any]) -> None:
        await gate.wait()
        await ws.send_json({"msg": event["text"], "offset": event["offset"]})

    @slow.on("history.gap")
    async def gap(ws: WebSocket, event: dict[str, Any]) -> None:
        await ws.send_json({"gap": event["reason"], "offset": event["offset"]})

    return app, gate


@pytest.fixture(params=["memory", "redis"])
async def layer_url(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], str]]:
    if request.param == "memory":
        yield lambda: "memory://?capacity=2"
        return
    server = request.getfixturevalue("redis_server")
    prefix = f"missed{id(request)}"
    yield lambda: f"{server.url}?capacity=2&prefix={prefix}"


async def frames(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        got.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    return got


async def nothing_more(ws: ClientConnection) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), 0.3)
    except asyncio.TimeoutError:
        return True
    return False


async def test_a_drop_at_the_end_of_a_burst_is_filled_without_a_further_message(
    layer_url: Callable[[], str],
) -> None:
    app, gate = gated_app(layer_url())
    total = 30
    async with running(app) as server, connect(f"ws://127.0.0.1:{server.bound_port}/slow") as ws:
        assert json.loads(await ws.recv()) == {"joined": True}
        for i in range(total):
            await app.group_send(GROUP, {"type": "chat.line", "text": str(i)})
        layer = app.layer
        # Every message is sent; the last ones were dropped for the held connection.
        await _until(lambda: layer.drops[GROUP] > 0)
        gate.set()
        got = await frames(ws, total)
        assert await nothing_more(ws)
    assert [f["msg"] for f in got] == [str(i) for i in range(total)]
    assert [f["offset"] for f in got] == list(range(1, total + 1))
    assert app.stats.events_refetched == layer.drops[GROUP] > 0
    assert app.stats.slow_consumers == 0


async def test_dropped_broadcast_frames_of_a_history_group_are_written_from_the_history(
    layer_url: Callable[[], str],
) -> None:
    """``app.broadcast`` frames queue behind a held event; those the layer then drops are
    written from the history where they were dropped (encoded again only for this
    connection: the fast path stays one encoding for everyone)."""
    app, gate = gated_app(layer_url())
    total = 30
    async with running(app) as server, connect(f"ws://127.0.0.1:{server.bound_port}/slow") as ws:
        assert json.loads(await ws.recv()) == {"joined": True}
        await app.group_send(GROUP, {"type": "chat.line", "text": "first"})
        for i in range(total):
            await app.broadcast(GROUP, json={"frame": i})
        layer = app.layer
        await _until(lambda: layer.drops[GROUP] > 0)
        gate.set()
        got = await frames(ws, total + 1)
        assert await nothing_more(ws)
    assert got[0] == {"msg": "first", "offset": 1}
    assert got[1:] == [{"frame": i} for i in range(total)]
    assert app.stats.events_refetched == layer.drops[GROUP] > 0


async def test_a_dropped_run_the_history_no_longer_has_is_a_gap_event() -> None:
    app, gate = gated_app("memory://?capacity=2", size=2)
    total = 30
    async with running(app) as server, connect(f"ws://127.0.0.1:{server.bound_port}/slow") as ws:
        assert json.loads(await ws.recv()) == {"joined": True}
        for i in range(total):
            await app.group_send(GROUP, {"type": "chat.line", "text": str(i)})
        gate.set()
        got: list[dict[str, Any]] = []
        while not got or got[-1].get("msg") != str(total - 1):
            got += await frames(ws, 1)
        assert await nothing_more(ws)
    gaps = [f for f in got if "gap" in f]
    assert [g["gap"] for g in gaps] == ["too_old"]
    # What came before the gap notice is in order, and what follows it is the newest.
    offsets = [f["offset"] for f in got if "msg" in f]
    assert offsets == sorted(offsets) and offsets[-1] == total


class FailingHistory(MemoryLayer):
    """A memory layer whose history cannot be read (a backend down mid-recovery)."""

    async def history(
        self, group: str, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryPage:
        raise ConnectionError("the backend is down")


async def test_a_dropped_run_that_cannot_be_read_back_is_a_gap_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, gate = gated_app(FailingHistory(capacity=2))
    total = 30
    async with running(app) as server, connect(f"ws://127.0.0.1:{server.bound_port}/slow") as ws:
        assert json.loads(await ws.recv()) == {"joined": True}
        for i in range(total):
            await app.group_send(GROUP, {"type": "chat.line", "text": str(i)})
        layer = app.layer
        dropped = layer.drops[GROUP]
        assert dropped > 0
        gate.set()
        got = await frames(ws, total - dropped + 1)
        assert await nothing_more(ws)
    kept = [f["offset"] for f in got if "msg" in f]
    assert kept == list(range(1, total - dropped + 1))
    assert got[-1] == {"gap": "unavailable", "offset": total - dropped}
    assert "Could not read the events of 'room.slow' after offset" in caplog.text


async def _until(condition: Callable[[], bool]) -> None:
    # The sends above return once the layer took them; a backend with a reader of its own
    # (Redis) hands them to this process a moment later: wait on the loop, bounded.
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


class DownDuringResume(MemoryLayer):
    """A memory layer whose backend goes down as a join from a position reads its history
    (Redis stopped mid-resume, say): the read raises the layer's LayerUnavailable."""

    async def history(
        self, group: str, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryPage:
        raise LayerUnavailable("the backend is unreachable (stopped mid-resume)")


async def test_a_resume_while_the_layer_is_down_closes_with_1011_not_a_partial_history(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests import streams_app

    app = App(layer=DownDuringResume())
    app.history("room.*", size=100)
    app.add_route(streams_app.app.routes[0])
    await app.group_send("room.down", {"type": "chat.line", "text": "kept"})
    url = "/room/down?offset=0&epoch=whatever"
    async with running(app) as server:
        async with connect(f"ws://127.0.0.1:{server.bound_port}{url}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)  # nothing is replayed: it closes
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        assert app.stats.events_replayed == 0
        assert app.hub.local_groups == {}  # the join left nothing behind
    assert "is unavailable: LayerUnavailable" in caplog.text
