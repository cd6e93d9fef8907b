"""A background task broadcasting to a group every second, started from on_startup.

chanlite run examples/ticker.py:app
# connect to ws://127.0.0.1:8000/ticks and watch the counter
"""

import asyncio
import os

from chanlite import App, WebSocket

app = App()
INTERVAL = float(os.environ.get("TICKER_INTERVAL", "1.0"))


async def tick_forever() -> None:
    n = 0
    while True:
        n += 1
        await app.broadcast("ticks", json={"tick": n})
        await asyncio.sleep(INTERVAL)


@app.on_startup
async def start_ticker() -> None:
    # app.spawn keeps a reference and cancels the task on shutdown.
    app.spawn(tick_forever())


@app.websocket("/ticks")
async def ticks(ws: WebSocket) -> None:
    await ws.accept()
    await ws.join("ticks")
    async for _ in ws.iter_text():  # keep the socket open until the client leaves
        pass
