"""chanlite's side of the benchmark: echo, broadcast and HTTP hello on one App.

Served by ``chanlite run chanlite_app:app`` (the built-in server) and, for comparison of the
framework alone, by uvicorn.  The layer comes from ``--layer`` or ``BENCH_LAYER``.
"""

from __future__ import annotations

import os

from chanlite import App, Request, WebSocket

app = App(layer=os.environ.get("BENCH_LAYER", "memory://"))
GROUP = "bench"


@app.http("/")
async def hello(request: Request) -> str:
    return "Hello, world!"


@app.websocket("/ws/echo")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    async for text in ws.iter_text():
        await ws.send_text(text)


@app.websocket("/ws/sub")
async def sub(ws: WebSocket) -> None:
    await ws.accept()
    await ws.join(GROUP)
    async for _ in ws.iter_text():
        pass


@app.websocket("/ws/pub")
async def pub(ws: WebSocket) -> None:
    await ws.accept()
    async for text in ws.iter_text():
        await app.broadcast(GROUP, text=text)
