"""History through ``chanlite run`` on Redis when Redis loses its data.

The app is the repository's ``tests/streams_app.py`` (``/room/NAME?offset=N&epoch=E``
resumes ``room.NAME`` after that position; every frame is JSON). The resume race with
other processes sending runs on every shared layer in
``tests/test_app_streams_processes.py``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chanlite.testing.served import served

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[3]
APP = "tests/streams_app.py:app"


async def _read(ws: Any, got: list[dict[str, Any]], until: int) -> None:
    while len(got) < until:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if "msg" in frame:
            got.append(frame)


async def test_a_resume_after_redis_lost_its_data_is_told_to_reload(
    own_redis: Any, prefix: str
) -> None:
    layer = f"{own_redis.url}?prefix={prefix}&timeout=1"
    async with served(APP, "--layer", layer, "--no-access-log", cwd=ROOT) as server:
        url = server.ws_url("/room/lost")
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
