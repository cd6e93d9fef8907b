"""Served by the logging tests: a plain page and an event stream that never ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from chanlite import App, Request, StreamingResponse
from chanlite.responses import format_sse

app = App(layer=None)


@app.http("/")
async def index(request: Request) -> str:
    return "hi"


@app.http("/events")
async def events(request: Request) -> StreamingResponse:
    async def ticks() -> AsyncIterator[str]:
        while True:
            yield format_sse("tick")
            await asyncio.sleep(0.05)

    return StreamingResponse(ticks(), media_type="text/event-stream")
