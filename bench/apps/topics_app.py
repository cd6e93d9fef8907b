"""The app bench/topics.py drives: topics next to a plain broadcast socket, same payload."""

from __future__ import annotations

import os
from typing import Any

from chanlite import App, WebSocket
from chanlite.topics import Channel, Limits

app = App(layer=os.environ.get("BENCH_LAYER", "memory://"))
socket = app.socket("/socket", limits=Limits(max_topics=100, join_rate=1e9, join_burst=1_000_000))
room = socket.topic("room:{n}")
history = socket.topic("hist:{n}", history=1000)


@room.on("pub")
async def pub(channel: Channel, n: str, payload: Any) -> None:
    await channel.broadcast("msg", payload)


@history.on("pub")
async def hist_pub(channel: Channel, n: str, payload: Any) -> dict[str, Any]:
    await channel.broadcast("msg", payload)
    return {}


@app.websocket("/ws/sub")
async def sub(ws: WebSocket) -> None:
    await ws.accept()
    await ws.join("bench")
    await ws.send_text("joined")
    async for _ in ws.iter_text():
        pass


@app.websocket("/ws/pub")
async def publish(ws: WebSocket) -> None:
    await ws.accept()
    async for text in ws.iter_text():
        await app.broadcast("bench", text=text)
