"""Served by two ``chanlite run --layer redis://...`` processes in test_redis_servers.py."""

from __future__ import annotations

import os
from typing import Any

from chanlite import App, WebSocket

app = App(layer=None)


@app.websocket("/ws")
async def room(ws: WebSocket) -> None:
    await ws.accept()
    await ws.join("room")
    # Sent after the membership is confirmed: the client knows it is in the room.
    await ws.send_json({"channel": ws.channel_name, "pid": os.getpid()})
    async for text in ws.iter_text():
        if text.startswith("to "):
            _, channel, body = text.split(" ", 2)
            await app.send(channel, {"type": "direct", "text": body})
        else:
            await app.broadcast("room", text=text)


@room.on("direct")
async def direct(ws: WebSocket, event: dict[str, Any]) -> None:
    await ws.send_text(f"direct {event['text']}")
