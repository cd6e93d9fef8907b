"""The resume race across real OS processes: two processes send to a room while a client
served by ``chanlite run --workers 2`` reconnects from its last position again and again,
on every layer processes share (SQLite, Redis). Every message must arrive once, in each
sender's order."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from chanlite.testing.peer import Peer
from chanlite.testing.served import served

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
PER_SENDER = 250


@pytest.fixture(params=["sqlite", "redis"])
def layer_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of each layer several processes share (a fresh database, a fresh prefix)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'race.db'}"
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix={request.getfixturevalue('prefix')}"


async def _read(ws: Any, got: list[dict[str, Any]], until: int) -> None:
    while len(got) < until:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if "msg" in frame:
            got.append(frame)


async def test_reconnects_while_other_processes_send(layer_url: str) -> None:
    options = "&" if "?" in layer_url else "?"
    async with served(
        "tests/streams_app.py:app", "--layer", layer_url, "--workers", "2",
        "--no-access-log", "--log-level", "warning", cwd=ROOT,
    ) as server:  # fmt: skip
        url = server.ws_url("/room/race")
        # The senders declare the same history as the app (the URL form of app.history).
        peers = [
            Peer(f"{layer_url}{options}history=room.*:1000", "send", group="room.race",
                 count=PER_SENDER, tag=tag)
            for tag in ("p1", "p2")
        ]  # fmt: skip
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
            # max_queue=None: the client library stops reading at 16 unread frames, and
            # would then wait its close_timeout for a close reply queued behind frames it
            # ignores.
            async with connect(resume, max_queue=None, open_timeout=20) as ws:
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
