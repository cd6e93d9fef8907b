"""The app the operations tests serve with ``chanlite run --workers 2``: echo, rooms, a
flood for clients that never read, and its pid."""

from __future__ import annotations

import os

from chanlite import App, WebSocket

app = App(layer="memory://")


@app.http("/pid")
async def pid(request: object) -> dict[str, int]:
    return {"pid": os.getpid()}


@app.websocket("/echo")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    async for text in ws.iter_text():
        await ws.send_text(text)


@app.websocket("/room/{room}")
async def room(ws: WebSocket, room: str) -> None:
    """Joins ``room.<room>``; a text frame is broadcast to the room."""
    await ws.accept()
    await ws.join(f"room.{room}")
    await ws.send_text(f"joined {os.getpid()}")
    async for text in ws.iter_text():
        await app.broadcast(f"room.{room}", text=text)


@app.websocket("/flood/{room}")
async def flood(ws: WebSocket, room: str) -> None:
    """Joins ``room.<room>`` and writes 64 KiB messages until the client is closed."""
    await ws.accept()
    await ws.join(f"room.{room}")
    chunk = b"x" * 65536
    try:
        while True:
            await ws.send_bytes(chunk)
    except Exception:  # closed as a slow consumer: the send fails, the handler ends
        pass
