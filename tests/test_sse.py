"""``EventSourceResponse``: events with their fields, keep-alive comments, the end."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chanlite import App, EventSourceResponse, Request, ServerSentEvent
from chanlite.testing import TestClient


async def test_events_fields_json_data_and_keep_alive_comments() -> None:
    app = App(layer=None)
    closed = asyncio.Event()

    @app.http("/events")
    async def events(request: Request) -> EventSourceResponse:
        async def source() -> AsyncIterator[Any]:
            try:
                yield ServerSentEvent("hello", event="greet", id="1", retry=3000)
                yield {"data": {"n": 2, "at": datetime.date(2026, 1, 2)}, "id": "2"}
                yield "plain\ntwo lines"
                await asyncio.sleep(0.25)  # silence: keep-alive comments go out meanwhile
                yield ServerSentEvent(comment="bye")
            finally:
                closed.set()

        return EventSourceResponse(source(), ping=0.1)

    async with TestClient(app) as client:
        r = await client.get("/events")
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    body = r.text
    assert body.startswith(
        "event: greet\nid: 1\nretry: 3000\ndata: hello\n\n"
        'id: 2\ndata: {"n":2,"at":"2026-01-02"}\n\n'
        "data: plain\ndata: two lines\n\n"
    )
    assert body.count(": ping\n\n") >= 1
    assert body.endswith(": bye\n\n")
    assert closed.is_set()


async def test_a_client_that_leaves_closes_the_source() -> None:
    app = App(layer=None)
    closed = asyncio.Event()

    @app.http("/forever")
    async def forever(request: Request) -> EventSourceResponse:
        async def source() -> AsyncIterator[int]:
            try:
                n = 0
                while True:
                    n += 1
                    yield n
                    await asyncio.sleep(0.01)
            finally:
                closed.set()

        return EventSourceResponse(source(), ping=None)

    async with TestClient(app) as client:
        async with client.stream("GET", "/forever") as r:
            async for line in r.aiter_lines():
                if line == "data: 3":
                    break
        await asyncio.wait_for(closed.wait(), 5)


def test_ping_must_be_positive() -> None:
    async def nothing() -> AsyncIterator[str]:
        yield "x"

    with pytest.raises(ValueError, match="ping must be positive"):
        EventSourceResponse(nothing(), ping=0)
