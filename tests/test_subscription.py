"""``app.subscribe``: events in order, backpressure on the hub, and the slow-consumer
policy (the subscription ends with :class:`SlowConsumer`, counted and logged once)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chanlite import App, Request, StreamingResponse
from chanlite.exceptions import SlowConsumer
from chanlite.hub import ROOM_WAIT
from tests.server.conftest import running

pytestmark = pytest.mark.timeout(60)


async def test_a_reader_that_keeps_up_gets_every_event_in_order() -> None:
    app = App(layer="memory://")
    async with app.subscribe("ticks", max_pending=100) as subscription:
        # 1,000 sends without yielding to the reader: the layer waits for the hub's reader,
        # the reader for room in the subscription; nothing is dropped.
        sender = asyncio.create_task(_send(app, 1000))
        got = []
        async for event in subscription:
            got.append(event["n"])
            if len(got) == 1000:
                break
        await sender
    assert got == list(range(1000))
    assert app.stats.slow_consumers == 0
    assert app.stats.events_undeliverable == 0
    assert app.hub.layer.dropped == 0
    await app.hub.aclose()


async def _send(app: App, count: int, size: int = 0) -> None:
    for n in range(count):
        await app.group_send("ticks", {"type": "tick", "n": n, "pad": "x" * size})


async def test_a_reader_that_stops_is_ended_as_a_slow_consumer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="chanlite.subscription")
    app = App(layer="memory://")
    async with app.subscribe("ticks", max_pending=5) as subscription:
        await _send(app, 3)
        assert (await subscription.receive(timeout=5))["n"] == 0
        await _send(app, 30)  # the reader takes nothing more
        async with asyncio.timeout(ROOM_WAIT + 5):
            while not app.stats.slow_consumers:
                await asyncio.sleep(0.05)
            while subscription.dropped < 32:  # every event after the first
                await asyncio.sleep(0.05)
        with pytest.raises(SlowConsumer) as info:
            async for _event in subscription:
                pass
        with pytest.raises(SlowConsumer):
            await subscription.receive(timeout=1)
        await _send(app, 2)  # later events are counted too, not queued
        async with asyncio.timeout(5):
            while subscription.dropped < 34:
                await asyncio.sleep(0.02)
    assert info.value.channel_name == subscription.channel_name
    assert app.stats.slow_consumers == 1
    assert app.stats.events_undeliverable == 34
    warnings = [r for r in caplog.records if "slow consumer" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "ticks" in warnings[0].getMessage()
    await app.hub.aclose()


async def test_a_stalled_subscription_does_not_hold_back_another_one() -> None:
    """The hub waits at most ROOM_WAIT for a stalled subscription; once the policy has
    ended it, another subscription of the same group gets every event, in order."""
    app = App(layer="memory://")
    async with (
        app.subscribe("ticks", max_pending=2) as stalled,
        app.subscribe("ticks", max_pending=100) as reader,
    ):
        await _send(app, 10)
        got = [event["n"] async for event in _take(reader, 10)]
        with pytest.raises(SlowConsumer):
            await stalled.receive(timeout=1)
        sender = asyncio.create_task(_send(app, 500))
        got += [event["n"] async for event in _take(reader, 500)]
        await sender
        assert got == list(range(10)) + list(range(500))
        assert stalled.dropped == 510  # two queued, then every later one
    assert app.stats.slow_consumers == 1
    assert app.hub.layer.dropped == 0
    await app.hub.aclose()


async def _take(subscription: Any, count: int) -> AsyncIterator[Any]:
    taken = 0
    async for event in subscription:
        yield event
        taken += 1
        if taken == count:
            return


async def test_an_sse_client_that_never_reads_ends_its_subscription(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Over a real socket: a server-sent-events client that reads nothing stalls its
    stream; the subscription feeding it is ended as a slow consumer (counted, logged
    once) instead of queueing without bound, and the response write timeout drops the
    client; the stream then finishes."""
    caplog.set_level(logging.WARNING)
    app = App(layer="memory://")
    finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @app.http("/events")
    async def events(request: Request) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            try:
                async with app.subscribe("ticks", max_pending=20) as subscription:
                    yield ": connected\n\n"
                    async for event in subscription:
                        yield f"data: {event['n']} {event['pad']}\n\n"
            finally:
                finished.set_result(None)

        return StreamingResponse(stream(), media_type="text/event-stream")

    async with running(app, timeout_response_write=2.0) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", server.bound_port or 0))
        await loop.sock_sendall(sock, b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        async with asyncio.timeout(10):
            while not app.hub.connections:  # subscribed
                await asyncio.sleep(0.02)
        sent = 0
        async with asyncio.timeout(ROOM_WAIT + 10):
            while not app.stats.slow_consumers:  # 10 KB events the client never reads
                await app.group_send("ticks", {"type": "tick", "n": sent, "pad": "x" * 10_000})
                sent += 1
                await asyncio.sleep(0.005)
        await asyncio.wait_for(finished, 15)
        sock.close()
    assert app.stats.slow_consumers == 1
    assert app.stats.events_undeliverable >= 20  # what it held, dropped and counted
    warnings = [r for r in caplog.records if "slow consumer" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
