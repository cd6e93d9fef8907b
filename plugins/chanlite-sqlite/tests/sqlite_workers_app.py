"""Served by ``chanlite run --workers 2`` in test_sqlite_workers.py: a one-room broadcast."""

from __future__ import annotations

import os

from chanlite import App, WebSocket

app = App(layer=None)


@app.websocket("/ws")
async def room(ws: WebSocket) -> None:
    await ws.accept()
    await ws.join("room")
    # Sent after the membership is committed: the client knows it is in the room.
    await ws.send_text(f"pid {os.getpid()}")
    async for text in ws.iter_text():
        await app.broadcast("room", text=f"{os.getpid()}: {text}")
