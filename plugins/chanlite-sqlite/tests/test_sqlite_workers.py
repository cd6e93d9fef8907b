"""``chanlite run --workers 2 --layer sqlite:///...``: sockets on different workers share a room."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from chanlite.testing.served import served

pytestmark = pytest.mark.timeout(90)

HERE = Path(__file__).parent


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    layer = f"sqlite:///{tmp_path / 'workers.db'}"
    async with served(
        "sqlite_workers_app.py:app", "--workers", "2", "--layer", layer, "--no-access-log",
        cwd=HERE,
    ) as app:  # fmt: skip
        yield app.ws_url("/ws"), layer


async def _connect(url: str) -> tuple[ClientConnection, str]:
    for _ in range(100):  # the workers may still be starting
        try:
            client = await connect(url, open_timeout=5)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        hello = await asyncio.wait_for(client.recv(), 10)
        assert isinstance(hello, str) and hello.startswith("pid ")
        return client, hello.split()[1]
    raise AssertionError(f"could not connect to {url}")


async def test_broadcast_reaches_sockets_on_every_worker(server: tuple[str, str]) -> None:
    url, layer = server
    clients: list[tuple[ClientConnection, str]] = []
    try:
        # The kernel spreads connections over the workers; keep going until both have some.
        while len({pid for _, pid in clients}) < 2 or len(clients) < 4:
            clients.append(await _connect(url))
            assert len(clients) <= 60, "all connections landed on one worker"

        first, first_pid = clients[0]
        await first.send("hello room")
        for client, _ in clients:
            assert await asyncio.wait_for(client.recv(), 10) == f"{first_pid}: hello room"

        sender = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chanlite",
            "send",
            "--layer",
            layer,
            "--broadcast-text",
            "from chanlite send",
            "room",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(sender.communicate(), 30)
        assert sender.returncode == 0, err.decode()
        for client, _ in clients:
            assert await asyncio.wait_for(client.recv(), 10) == "from chanlite send"
    finally:
        await asyncio.gather(*(client.close() for client, _ in clients))
