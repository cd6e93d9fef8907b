"""History and presence through ``chanlite run`` on Redis: real servers, clients, senders.

The app is the repository's ``tests/streams_app.py`` (``/room/NAME?offset=N&epoch=E``
resumes ``room.NAME`` after that position; every frame is JSON).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chanlite.testing.peer import Peer

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[3]
APP = "tests/streams_app.py:app"
PER_SENDER = 250


@asynccontextmanager
async def served(layer: str, *args: str) -> AsyncIterator[str]:
    """``chanlite run`` of the streams app on *layer*; yields its ws:// base URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chanlite", "run", APP, "--layer", layer,
        "--host", "127.0.0.1", "--port", "0", "--no-access-log", "--log-level", "warning",
        *args,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    banner = ""
    try:
        while (match := re.search(r"http://([\d.]+:\d+)", banner)) is None:
            line = await asyncio.wait_for(proc.stderr.readline(), 40)
            assert line, f"chanlite run exited early: {banner}"
            banner += line.decode()
        yield f"ws://{match.group(1)}"
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def _read(ws: Any, got: list[dict[str, Any]], until: int) -> None:
    while len(got) < until:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if "msg" in frame:
            got.append(frame)


async def test_reconnects_while_other_processes_send(redis_server: Any, prefix: str) -> None:
    layer = f"{redis_server.url}?prefix={prefix}"
    async with served(layer, "--workers", "2") as base:
        url = f"{base}/room/race"
        # The senders declare the same history as the app (the URL form of app.history).
        peers = [
            Peer(f"{layer}&history=room.*:1000", "send", group="room.race", count=PER_SENDER, tag=t)
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
            async with connect(resume, close_timeout=0.2) as ws:
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


async def test_a_resume_after_redis_lost_its_data_is_told_to_reload(
    own_redis: Any, prefix: str
) -> None:
    layer = f"{own_redis.url}?prefix={prefix}&timeout=1"
    async with served(layer) as base:
        url = f"{base}/room/lost"
        async with connect(url, open_timeout=20) as ws:
            assert "joined" in json.loads(await ws.recv())
            for text in ("one", "two"):
                await ws.send(json.dumps({"say": text}))
            got: list[dict[str, Any]] = []
            await _read(ws, got, 2)
        assert [m["offset"] for m in got] == [1, 2]
        own_redis.stop()
        own_redis.start()  # no persistence: the history is gone
        last = got[-1]
        frames: list[dict[str, Any]] = []
        # The server's connections come back by themselves; the resume then says exactly
        # that the history was lost (another epoch), never a silent gap.
        for _ in range(50):
            try:
                async with connect(
                    f"{url}?offset={last['offset']}&epoch={last['epoch']}", open_timeout=20
                ) as ws:
                    frames = [json.loads(await asyncio.wait_for(ws.recv(), 20)) for _ in range(2)]
                break
            except ConnectionClosed:  # joined while the server still saw Redis down
                await asyncio.sleep(0.2)
        gap = next(frame for frame in frames if "gap" in frame)
        assert gap["gap"] == "epoch"
        assert gap["offset"] == 0 and gap["epoch"] != last["epoch"]
