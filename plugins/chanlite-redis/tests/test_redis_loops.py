"""One layer object, many event loops: loops that end mid-command, and loops that change.

Django Channels drives a layer this way: ``async_to_sync`` runs each call on a loop of its
own, pytest-asyncio gives each test a loop, ``asyncio.run`` scripts come and go. A loop's
end cancels whatever the layer was doing on it (a heartbeat, a blocking read, a
subscription, a pop), and the next loop takes over what the process holds.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from chanlite_redis import RedisLayer
from redis.asyncio import Redis

from chanlite.layers import LayerError

WAIT = 5.0
#: An asyncio.run() that has not returned after this long hangs (a correct one takes ms).
HANG = 30.0

CHANNELS_LOOPS = Path(__file__).with_name("channels_loops.py")


def run_bounded(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """``asyncio.run(main())`` in a thread; fails the test if it does not return."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(("ok", asyncio.run(main())))
        except BaseException as exc:  # handed to the test below
            outcome.append(("error", exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG)
    if thread.is_alive():
        pytest.fail(f"asyncio.run() did not return within {HANG}s: the loop cannot shut down")
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


# -- loop shutdown: a cancel lands anywhere, asyncio.run() returns ----------------------------


def test_asyncio_run_returns_wherever_its_end_interrupts_the_layer(
    redis_server: Any, prefix: str
) -> None:
    """Each run joins, sends and receives, then ends after a random few milliseconds,
    leaving asyncio.run() to cancel the layer's heartbeat, inbox reader, listener and
    pops wherever they are, often mid-command; every run must return."""
    layer = RedisLayer(redis_server.url, prefix=prefix, heartbeat=0.05, capacity=1000)
    other = RedisLayer(redis_server.url, prefix=prefix, capacity=1000)
    rng = random.Random(20)

    async def busy() -> None:
        # Keeps a command in flight, so the end lands mid-command as often as not.
        try:
            while True:
                await layer.group_send("busy", {"type": "tick"})
        except LayerError:
            pass  # the layer was closed under it

    async def one_run(delay: float, close: bool) -> None:
        mine = await layer.new_channel()
        await layer.group_add("room", mine)
        await other.send(mine, {"type": "direct"})  # through Redis: the inbox reader runs
        await layer.send("plain-jobs", {"type": "job"})
        tasks = [
            asyncio.ensure_future(layer.receive(mine)),
            asyncio.ensure_future(layer.receive("plain-jobs")),
            asyncio.ensure_future(layer.receive("plain-empty")),
            asyncio.ensure_future(busy()),
        ]
        await asyncio.sleep(delay)
        if close:
            await layer.close()
        del tasks  # left running: asyncio.run() cancels them

    try:
        for i in range(150):
            delay, close = rng.random() * 0.02, i % 10 == 9
            run_bounded(lambda: one_run(delay, close))  # noqa: B023 (called at once)
            run_bounded(other.close)  # its connections belong to the loop that ends
    finally:
        run_bounded(layer.close)


def test_channels_consumer_tests_finish_with_a_loop_per_test(
    redis_server: Any, prefix: str
) -> None:
    """Django Channels' consumer tests (WebsocketCommunicator, a loop per test, the layer
    never closed in between) run to the end on this layer."""
    result = subprocess.run(
        [sys.executable, str(CHANNELS_LOOPS), redis_server.url, prefix],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["OK"] * 4


# -- loop changes: what is queued for local channels survives ------------------------------


def test_send_receive_sync(redis_server: Any, prefix: str) -> None:
    """Channels' test_send_receive_sync: the send runs on a loop of its own."""
    layer = RedisLayer(redis_server.url, prefix=prefix)
    event_loop = asyncio.new_event_loop()
    try:
        channel = event_loop.run_until_complete(layer.new_channel())
        async_to_sync(layer.send, force_new_loop=True)(
            channel, {"type": "test.message", "text": "Ahoy-hoy!"}
        )
        message = event_loop.run_until_complete(asyncio.wait_for(layer.receive(channel), WAIT))
        assert message == {"type": "test.message", "text": "Ahoy-hoy!"}
        event_loop.run_until_complete(layer.close())
    finally:
        event_loop.close()


def test_multi_send_receive_sync(redis_server: Any, prefix: str) -> None:
    """Channels' test_multi_send_receive_sync: every send on a new loop, in order."""
    layer = RedisLayer(redis_server.url, prefix=prefix)
    event_loop = asyncio.new_event_loop()
    try:
        channel = event_loop.run_until_complete(layer.new_channel())
        send = async_to_sync(layer.send)
        for n in (1, 2, 3):
            send(channel, {"type": f"message.{n}"})
        got = [
            event_loop.run_until_complete(asyncio.wait_for(layer.receive(channel), WAIT))["type"]
            for _ in range(3)
        ]
        assert got == ["message.1", "message.2", "message.3"]
        event_loop.run_until_complete(layer.close())
    finally:
        event_loop.close()


def test_group_messages_survive_loop_changes(redis_server: Any, prefix: str) -> None:
    """A sync consumer's pattern: join, and group sends from this process and another,
    each call on a new loop; the messages wait for the loop that receives."""
    layer = RedisLayer(redis_server.url, prefix=prefix)
    other = RedisLayer(redis_server.url, prefix=prefix)
    event_loop = asyncio.new_event_loop()
    try:
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)("sync-room", channel)
        for n in (1, 2):
            async_to_sync(layer.group_send)("sync-room", {"type": "local", "n": n})
        got = [
            event_loop.run_until_complete(asyncio.wait_for(layer.receive(channel), WAIT))
            for _ in range(2)
        ]
        assert got == [{"type": "local", "n": 1}, {"type": "local", "n": 2}]
        # The loop that took over listens to the group again (a group_add there confirms
        # it): another process's messages arrive, its own loop coming and going too.
        event_loop.run_until_complete(layer.group_add("sync-room", channel))
        async_to_sync(other.group_send)("sync-room", {"type": "remote"})
        remote = event_loop.run_until_complete(asyncio.wait_for(layer.receive(channel), WAIT))
        assert remote == {"type": "remote"}
        event_loop.run_until_complete(layer.close())
        async_to_sync(other.close)()
    finally:
        event_loop.close()


def test_direct_sends_from_another_process_survive_loop_changes(
    redis_server: Any, prefix: str
) -> None:
    """What the inbox reader pulled from Redis on a loop that ends is kept locally."""
    layer = RedisLayer(redis_server.url, prefix=prefix)
    other = RedisLayer(redis_server.url, prefix=prefix)
    channel = async_to_sync(layer.new_channel)()

    async def send_and_take_one() -> dict[str, Any]:
        for n in range(3):
            await other.send(channel, {"type": "n", "n": n})
        channels, message = await asyncio.wait_for(layer.receive_local(), WAIT)
        assert list(channels) == [channel]
        return message

    assert run_bounded(send_and_take_one) == {"type": "n", "n": 0}

    async def take_rest() -> list[int]:
        got = [(await asyncio.wait_for(layer.receive_local(), WAIT))[1]["n"] for _ in range(2)]
        await layer.close()
        await other.close()
        return got

    assert run_bounded(take_rest) == [1, 2]


def test_a_plain_receive_cut_off_by_its_loop_loses_nothing(redis_server: Any, prefix: str) -> None:
    """Pops on a plain channel, each run ended after a random moment (mid-pop included):
    every message is received exactly once or is still in Redis."""
    layer = RedisLayer(redis_server.url, prefix=prefix, capacity=1000)
    rng = random.Random(13)
    total = 120
    received: list[int] = []

    async def fill() -> None:
        for n in range(total):
            await layer.send("cut-jobs", {"type": "job", "n": n})

    async def one_run(delay: float) -> None:
        async def take() -> None:
            while True:
                received.append((await layer.receive("cut-jobs"))["n"])

        task = asyncio.ensure_future(take())
        await asyncio.sleep(delay)
        del task  # asyncio.run() cancels it wherever it is

    run_bounded(fill)
    for _ in range(60):
        run_bounded(lambda: one_run(rng.random() * 0.004))

    async def rest() -> list[int]:
        client = Redis.from_url(redis_server.url)
        try:
            left = await client.llen(f"{prefix}c:{{cut-jobs}}")
        finally:
            await client.aclose()
        got = [(await layer.receive("cut-jobs"))["n"] for _ in range(left)]
        await layer.close()
        return got

    remaining = run_bounded(rest)
    assert sorted(received + remaining) == list(range(total))


def test_every_call_on_its_own_loop(redis_server: Any, prefix: str) -> None:
    """Sends and receives all through async_to_sync (a sync consumer's way)."""
    layer = RedisLayer(redis_server.url, prefix=prefix)
    channel = async_to_sync(layer.new_channel)()
    for n in range(3):
        async_to_sync(layer.send)(channel, {"type": "n", "n": n})
    got = [async_to_sync(layer.receive)(channel)["n"] for _ in range(3)]
    assert got == [0, 1, 2]
    async_to_sync(layer.close)()
