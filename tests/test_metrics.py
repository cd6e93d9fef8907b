"""``/metrics`` of one process (no workers): opt-in only, read with prometheus-client's own
parser, and the drop counters (channel full, expired) and the layer's receive wait move
as the layer drops and delivers."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from chanlite import App, WebSocket
from chanlite.testing import TestClient


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return scraped[name, tuple(sorted(labels.items()))]


async def test_metrics_are_not_served_unless_asked_for() -> None:
    app = App()
    async with TestClient(app) as client:
        assert (await client.get("/metrics")).status_code == 404
    assert app.metrics_path is None


async def test_drops_by_reason_and_the_receive_wait_move() -> None:
    app = App(layer="memory://?capacity=2&expiry=0.2", metrics="/metrics")

    @app.websocket("/ws")
    async def ws_route(ws: WebSocket) -> None:
        await ws.accept()
        await ws.join("room")
        await ws.send_text("joined")
        await ws.receive_text()

    @ws_route.on("room.note")
    async def note(ws: WebSocket, event: dict[str, str]) -> None:
        await ws.send_text(event["text"])

    async with TestClient(app) as client:
        before = samples((await client.get("/metrics")).text)
        assert value(before, "chanlite_dropped_total", reason="channel_full") == 0
        assert value(before, "chanlite_dropped_total", reason="expired") == 0

        # A local member while this process's reader has not started (no connection
        # yet): the third message finds it full (capacity 2).
        layer = app.layer
        idle = await layer.new_channel()
        await layer.group_add("idle", idle)
        for n in range(3):
            await layer.group_send("idle", {"type": "idle.note", "n": n})
        full = samples((await client.get("/metrics")).text)
        assert value(full, "chanlite_dropped_total", reason="channel_full") == 1

        # Its two messages expire unread (expiry 0.2 s): counted when the inbox is next
        # touched, here by the next message for it.
        await asyncio.sleep(0.3)
        await layer.group_send("idle", {"type": "idle.note", "n": 3})
        expired = samples((await client.get("/metrics")).text)
        assert value(expired, "chanlite_dropped_total", reason="expired") == 2
        assert value(expired, "chanlite_dropped_total", reason="channel_full") == 1
        await layer.group_discard("idle", idle)

        # Delivered: the hub's reader took the event from the layer's inbox.
        async with client.websocket("/ws") as ws:
            assert await ws.receive_text() == "joined"
            await app.group_send("room", {"type": "room.note", "text": "hello"})
            assert await ws.receive_text() == "hello"
            delivered = samples((await client.get("/metrics")).text)
            await ws.send_text("bye")
        assert value(delivered, "chanlite_events_total", outcome="received") >= 1
        assert value(delivered, "chanlite_layer_receive_wait_seconds_total") > 0
