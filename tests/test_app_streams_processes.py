"""The resume race across real OS processes: two processes send to a room while a client
served by ``chanlite run --workers 2`` on the SQLite layer reconnects from its last
position again and again. Every message must arrive once, in each sender's order."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from chanlite.testing.peer import Peer
from tests.server.procs import Running, served, start

__all__ = ["served"]

pytestmark = pytest.mark.timeout(120)

PER_SENDER = 250


async def _read(ws: Any, got: list[dict[str, Any]], until: int) -> None:
    while len(got) < until:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if "msg" in frame:
            got.append(frame)


async def test_reconnects_while_other_processes_send(tmp_path: Path, served: list[Running]) -> None:
    layer = f"sqlite:///{tmp_path / 'race.db'}"
    server = start(
        "tests/streams_app.py:app",
        "--layer",
        layer,
        "--workers",
        "2",
        "--no-access-log",
        "--log-level",
        "warning",
    )
    served.append(server)
    url = server.url.replace("http://", "ws://") + "/room/race"
    # The senders declare the same history as the app (the URL form of app.history).
    peers = [
        Peer(f"{layer}?history=room.*:1000", "send", group="room.race", count=PER_SENDER, tag=t)
        for t in ("p1", "p2")
    ]
    total = 2 * PER_SENDER
    got: list[dict[str, Any]] = []
    async with connect(url, open_timeout=20) as ws:
        assert "joined" in json.loads(await ws.recv())
        for peer in peers:
            await peer.start()
        for peer in peers:
            await peer.ready()  # from here on they send as fast as they can
        await _read(ws, got, 15)
    reconnects = 0
    while len(got) < total:
        last = got[-1]
        resume = f"{url}?offset={last['offset']}&epoch={last['epoch']}"
        # max_queue=None: the client library stops reading at 16 unread frames, and would
        # then wait its close_timeout for a close reply queued behind frames it ignores.
        async with connect(resume, max_queue=None) as ws:
            reconnects += 1
            await _read(ws, got, min(total, len(got) + 29))
    for peer in peers:
        assert await peer.result() == PER_SENDER
        await peer.stop()
    for tag in ("p1", "p2"):
        mine = [m["msg"] for m in got if m["tag"] == tag]
        assert mine == list(range(PER_SENDER)), f"{tag}: missed, repeated or reordered"
    assert [m["offset"] for m in got] == list(range(1, total + 1))
    assert len({m["epoch"] for m in got}) == 1
    assert reconnects >= 10
