"""The Channels tutorial's chat on two server processes that share a chanlite layer.

Two Daphne processes (Channels' own server), or two ``chanlite run`` processes, serve the
tutorial site with ``CHANNEL_LAYERS`` on the SQLite or the Redis layer; a browser-like
client on each. What one posts reaches the other through the layer, in order.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from tests.compat.conftest import PROJECT, LayerSpec
from tests.django.conftest import read_until, stop

pytestmark = pytest.mark.timeout(90)

WAIT = 10.0
SERVERS = {
    # command, and the line that says the server is listening (with its port)
    "daphne": (
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "0",
         "compat_site.asgi:application"],
        r"Listening on TCP address 127\.0\.0\.1:(\d+)",
    ),
    "chanlite": (
        [sys.executable, "-m", "chanlite", "run", "compat_site.asgi:application",
         "--host", "127.0.0.1", "--port", "0", "--no-access-log"],
        r"http://127\.0\.0\.1:(\d+)",
    ),
}  # fmt: skip


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.fixture(params=sorted(SERVERS))
def two_servers(request: pytest.FixtureRequest, shared_layer: LayerSpec) -> Iterator[list[int]]:
    """Two processes of one server kind on the shared layer; their ports."""
    command, ready = SERVERS[request.param]
    env = shared_layer.env()
    procs = [start(command, env) for _ in range(2)]
    try:
        yield [int(read_until(proc, ready, request.param)[1]) for proc in procs]
    finally:
        for proc in procs:
            stop(proc)


async def join(port: int, room: str) -> ClientConnection:
    url = f"ws://127.0.0.1:{port}/ws/chat/{room}/"
    # The tutorial's AllowedHostsOriginValidator wants a browser's Origin.
    return await connect(url, origin=Origin(f"http://127.0.0.1:{port}"), open_timeout=WAIT)


async def receive(ws: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def test_a_message_posted_on_one_server_reaches_the_other(two_servers: list[int]) -> None:
    first, second = two_servers
    # The tutorial joins the group before accepting: once open, each socket is a member.
    async with await join(first, "lobby") as alice, await join(second, "lobby") as bob:
        await alice.send(json.dumps({"message": "hello from server one"}))
        assert await receive(bob) == {"message": "hello from server one"}
        assert await receive(alice) == {"message": "hello from server one"}
        await bob.send(json.dumps({"message": "hello back"}))
        assert await receive(alice) == {"message": "hello back"}
        assert await receive(bob) == {"message": "hello back"}
        for n in range(15):  # in order, none lost (under the layer's capacity of 20)
            await alice.send(json.dumps({"message": f"line {n}"}))
        assert [await receive(bob) for _ in range(15)] == [
            {"message": f"line {n}"} for n in range(15)
        ]


async def test_rooms_stay_apart_across_servers(two_servers: list[int]) -> None:
    first, second = two_servers
    async with await join(first, "one") as alice, await join(second, "two") as bob:
        async with await join(second, "one") as carol:
            await bob.send(json.dumps({"message": "only room two"}))
            assert await receive(bob) == {"message": "only room two"}
            await alice.send(json.dumps({"message": "only room one"}))
            assert await receive(carol) == {"message": "only room one"}
            assert await receive(alice) == {"message": "only room one"}
        # Room two's next message is its own, not room one's.
        await bob.send(json.dumps({"message": "still only room two"}))
        assert await receive(bob) == {"message": "still only room two"}
