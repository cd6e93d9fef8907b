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


# The same broadcast without the fast path: a layer event per member, run by an ``on``
# handler that sends the text (what Channels' consumers do). bench.py's
# "chanlite-handlers" row uses these two routes, to show what app.broadcast() buys.
@app.websocket("/ws/sub-handler")
async def sub_handler(ws: WebSocket) -> None:
    await ws.accept()
    await ws.join(GROUP)
    async for _ in ws.iter_text():
        pass


@sub_handler.on("bench.msg")
async def bench_msg(ws: WebSocket, event: dict[str, str]) -> None:
    await ws.send_text(event["text"])


@app.websocket("/ws/pub-handler")
async def pub_handler(ws: WebSocket) -> None:
    await ws.accept()
    async for text in ws.iter_text():
        await app.group_send(GROUP, {"type": "bench.msg", "text": text})
