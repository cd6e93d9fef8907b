"""``/metrics`` of one process (no workers): opt-in only, read with prometheus-client's own
parser, and the drop counters (channel full, expired) and the layer's receive wait move
as the layer drops and delivers; a slow consumer of events reports the bytes that were
waiting in the metrics, in what ``chanlite inspect`` shows and once in the log."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chanlite import App, WebSocket, WebSocketDisconnect
from chanlite.census import Census
from chanlite.exceptions import SlowConsumer
from chanlite.hub import ROOM_WAIT, SlowConsumerReport
from chanlite.inspector import COLUMNS, details, gather_from
from chanlite.metrics import Metrics
from chanlite.server.counters import ServerCounters
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


def packed(event: dict[str, Any]) -> int:
    return len(msgpack.packb(event, use_bin_type=True))


async def test_a_stuck_handler_reports_the_bytes_of_the_events_waiting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Events pile up for a handler that never finishes: the connection is closed as a
    slow consumer, and the report gives the events' size as the layer carries them."""
    monkeypatch.setattr("chanlite.hub.ROOM_WAIT", 0.2)
    app = App(layer="memory://", metrics="/metrics", max_pending_events=3)
    stuck = asyncio.Event()

    @app.websocket("/stuck")
    async def stuck_route(ws: WebSocket) -> None:
        await ws.accept()
        await ws.join("stuck")
        await ws.send_text("ready")
        async for _ in ws.iter_text():
            pass

    @stuck_route.on("note")
    async def never_done(ws: WebSocket, event: dict[str, Any]) -> None:
        stuck.set()
        await asyncio.sleep(3600)

    caplog.set_level(logging.WARNING, logger="chanlite")
    pad = "x" * 500
    async with TestClient(app) as client:
        async with client.websocket("/stuck") as ws:
            await ws.receive_text()
            for n in range(5):  # 1 being handled + 2 queued, then no room
                await app.group_send("stuck", {"type": "note", "n": n, "pad": pad})
            await stuck.wait()
            with pytest.raises(WebSocketDisconnect):
                await ws.receive_text(timeout=10)
            assert (ws.close_code, ws.close_reason) == (1013, "slow consumer")
        scraped = samples((await client.get("/metrics")).text)
    (report,) = app.hub.slow_consumer_reports
    size = packed({"type": "note", "n": 0, "pad": pad})  # the same for n < 128
    assert report.kind == "events" and report.events == 3
    assert report.waiting == 3 * size
    assert app.stats.slow_consumer_events == 3 and app.stats.slow_consumer_bytes == 3 * size
    assert value(scraped, "chanlite_slow_consumers_total", kind="events") == 1
    assert value(scraped, "chanlite_slow_consumer_waiting_bytes_total", kind="events") == 3 * size
    assert value(scraped, "chanlite_slow_consumer_waiting_bytes_total", kind="bytes") == 0
    assert value(scraped, "chanlite_dropped_total", reason="slow_consumer") == 3
    # What chanlite inspect shows of this process.
    view = {"processes": [Census(app.hub).report()], "groups": {}, "presence": {}}
    (line,) = details(view)
    assert f"{3 * size} bytes waiting (3 events for its handlers)" in line
    assert "/stuck" in line and "groups stuck" in line
    warnings = [r.getMessage() for r in caplog.records if "slow consumer" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"3 events, {3 * size} bytes waiting" in warnings[0]


async def test_an_ended_subscription_reports_the_bytes_of_the_events_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="chanlite.subscription")
    app = App(layer="memory://")
    sizes = []
    async with app.subscribe("ticks", max_pending=4) as subscription:
        for n in range(10):
            event = {"type": "tick", "n": n, "pad": "y" * (100 * n)}
            sizes.append(packed(event))
            await app.group_send("ticks", event)
        async with asyncio.timeout(ROOM_WAIT + 5):
            while not app.stats.slow_consumers:
                await asyncio.sleep(0.05)
        with pytest.raises(SlowConsumer):
            await subscription.receive(timeout=1)
    (report,) = app.hub.slow_consumer_reports
    # The four events queued when the reader stopped taking them: the first four.
    assert report.kind == "events" and report.events == 4
    assert report.waiting == sum(sizes[:4]) == app.stats.slow_consumer_bytes
    warnings = [r.getMessage() for r in caplog.records if "slow consumer" in r.getMessage()]
    assert len(warnings) == 1 and f"4 events, {sum(sizes[:4])} bytes waiting" in warnings[0]
    await app.hub.aclose()


async def test_every_metric_and_every_inspect_field_is_described_in_the_operations_page() -> None:
    """docs/operations.md names every sample a scrape exports, every label value, and
    every field of ``chanlite inspect --json`` (a process's numbers included)."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    app = App(layer="memory://")
    census = Census(app.hub)
    census.server = ServerCounters()  # as under a server: its counters are in the numbers
    text = Metrics(census, "/metrics").exposition()[0].decode()
    names = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names += [sample.name, *sample.labels, *sample.labels.values()]
    report = census.report()
    view = await gather_from(app.layer, "memory://")
    names += [*view, *report, *report["numbers"], *COLUMNS]
    names += SlowConsumerReport(time.time(), "events", "-", "/", None, [], 0).as_dict()
    missing = {f"`{name}`" for name in names if f"`{name}`" not in page}
    assert not missing, f"not described in docs/operations.md: {sorted(missing)}"
    await app.hub.aclose()
