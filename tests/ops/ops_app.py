"""The app the operations tests serve with ``chanlite run --workers 2``: echo, rooms (with
or without presence), a flood for clients that never read, a group member nobody reads,
and its pid."""

from __future__ import annotations

import os

from chanlite import App, WebSocket

app = App(layer="memory://")


@app.http("/pid")
async def pid(request: object) -> dict[str, int]:
    return {"pid": os.getpid()}


@app.http("/fill/{n:int}")
async def fill(request: object, n: int) -> dict[str, int]:
    """Sends *n* events to group ``ops.fill``, whose one member is a channel nobody reads:
    past the layer's capacity (100) each is dropped for it, and counted."""
    await app.layer.group_add("ops.fill", "ops.nobody")
    for i in range(n):
        await app.group_send("ops.fill", {"type": "ops.fill", "n": i})
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


@app.websocket("/present/{room}")
async def present(ws: WebSocket, room: str) -> None:
    """Joins ``room.<room>`` with a presence entry (key: its pid and a counter)."""
    await ws.accept()
    await ws.join(f"room.{room}", presence=(f"user{id(ws)}", {"pid": os.getpid()}))
    await ws.send_text(f"present {os.getpid()}")
    async for _ in ws.iter_text():
        pass


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
