"""Two ``chanlite run`` servers (as two machines) on one Redis, with WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from chanlite_redis import RedisLayer
from websockets.asyncio.client import ClientConnection, connect

from chanlite.testing.served import served

pytestmark = pytest.mark.timeout(90)

HERE = Path(__file__).parent
WAIT = 10.0


@asynccontextmanager
async def chanlite_server(layer: str) -> AsyncIterator[str]:
    async with served(
        "servers_app.py:app", "--layer", layer, "--no-access-log", cwd=HERE
    ) as server:
        yield server.ws_url("/ws")


async def _client(url: str) -> tuple[ClientConnection, str]:
    for _ in range(100):
        try:
            client = await connect(url, open_timeout=5)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        hello = json.loads(await asyncio.wait_for(client.recv(), WAIT))
        return client, hello["channel"]
    raise AssertionError(f"could not connect to {url}")


@asynccontextmanager
async def two_servers_with_clients(
    redis_url: str, prefix: str
) -> AsyncIterator[list[tuple[ClientConnection, str]]]:
    layer = f"{redis_url}?prefix={prefix}&heartbeat=1"
    async with chanlite_server(layer) as one, chanlite_server(layer) as two:
        clients = [await _client(url) for url in (one, one, two, two)]
        try:
            yield clients
        finally:
            for client, _ in clients:
                await client.close()


async def test_broadcast_from_either_server_reaches_all_and_direct_sends_cross(
    redis_server: Any, prefix: str
) -> None:
    async with two_servers_with_clients(redis_server.url, prefix) as clients:
        for sender, text in ((clients[0][0], "from one"), (clients[3][0], "from two")):
            await sender.send(text)
            for client, _ in clients:
                assert await asyncio.wait_for(client.recv(), WAIT) == text
        # A socket on server one sends straight to a socket on server two, and back.
        await clients[0][0].send(f"to {clients[2][1]} hello two")
        assert await asyncio.wait_for(clients[2][0].recv(), WAIT) == "direct hello two"
        await clients[3][0].send(f"to {clients[1][1]} hello one")
        assert await asyncio.wait_for(clients[1][0].recv(), WAIT) == "direct hello one"

        # `chanlite send` and a plain layer from outside reach sockets on both servers.
        url = f"{redis_server.url}?prefix={prefix}"
        result = subprocess.run(
            [sys.executable, "-m", "chanlite", "send", "--layer", url,
             "--broadcast-text", "from the cli", "room"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        for client, _ in clients:
            assert await asyncio.wait_for(client.recv(), WAIT) == "from the cli"
        result = subprocess.run(
            [sys.executable, "-m", "chanlite", "send", "--layer", url,
             "--channel", clients[2][1], '{"type": "direct", "text": "from cli"}'],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert await asyncio.wait_for(clients[2][0].recv(), WAIT) == "direct from cli"


async def test_servers_recover_when_redis_restarts(own_redis: Any, prefix: str) -> None:
    async with two_servers_with_clients(own_redis.url, prefix) as clients:
        await clients[0][0].send("before")
        for client, _ in clients:
            assert await asyncio.wait_for(client.recv(), WAIT) == "before"

        own_redis.stop()
        await asyncio.sleep(0.3)
        own_redis.start()

        # Same chanlite processes: once their listeners are back, broadcasts flow again.
        outside = RedisLayer(own_redis.url, prefix=prefix)
        try:
            seen: list[list[str]] = [[] for _ in clients]
            deadline = asyncio.get_running_loop().time() + 20
            number = 0
            while not all(seen):
                assert asyncio.get_running_loop().time() < deadline, seen
                number += 1
                event = {"type": "chanlite.broadcast", "text": f"ping {number}"}
                await outside.group_send("room", event)
                for i, (client, _) in enumerate(clients):
                    with suppress(asyncio.TimeoutError):
                        seen[i].append(str(await asyncio.wait_for(client.recv(), 0.2)))
            await outside.group_send("room", {"type": "chanlite.broadcast", "text": "final"})
            for i, (client, _) in enumerate(clients):
                while True:
                    text = str(await asyncio.wait_for(client.recv(), WAIT))
                    seen[i].append(text)
                    if text == "final":
                        break
            for texts in seen:
                assert len(texts) == len(set(texts)), f"delivered twice: {texts}"
        finally:
            await outside.close()
        # Sockets can broadcast again themselves, too.
        await clients[3][0].send("after")
        for client, _ in clients:
            assert await asyncio.wait_for(client.recv(), WAIT) == "after"
