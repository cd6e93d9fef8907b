"""A member whose client never reads, in the README chat app served by ``chanlite run``.

One socket posts 2,000 messages of 100 KB to a room; a second member never reads; a third
reads everything. The events waiting for the silent member are bounded by the layer's
capacity: it is closed with 1013 "slow consumer" (logged once, with its address), the
reader gets every message in order, and the server's RSS stays under a ceiling far below
the 200 MB that queueing every message for the silent member would take.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.server.procs import Running, start

pytestmark = pytest.mark.timeout(300)

MESSAGES = 2000
SIZE = 100_000
WINDOW = 16  # posts in flight: the poster waits for its own copies, as a chat page would
CEILING_MB = 80  # growth over the idle server allowed while the silent member is held


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match.group(1)) / 1024


class RSSSampler(threading.Thread):
    """Samples a process's RSS every 20 ms; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, rss_mb(self.pid))


def silent_member(port: int, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # one byte at a time: no frame is read past the head
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def read_until_close(sock: socket.socket) -> tuple[int, str, int]:
    """Read server frames until the close frame: ``(code, reason, data frames before it)``."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed before the close frame")
            data += chunk
        return data

    frames = 0
    while True:
        first, second = exactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", exactly(8))
        payload = exactly(length)
        if first & 0x0F == 0x8:
            (code,) = struct.unpack("!H", payload[:2])
            return code, payload[2:].decode(), frames
        frames += 1


@pytest.fixture
def server() -> Iterator[Running]:
    running = start("tests/readme_chat_app.py:app", "--ws-close-timeout", "60", "--no-access-log")
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.communicate(timeout=10)


async def test_a_member_that_never_reads_is_closed_1013_and_memory_stays_bounded(
    server: Running,
) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    pid = server.proc.pid
    url = f"ws://127.0.0.1:{port}/ws/chat/lobby"
    async with connect(url, max_size=None, compression=None) as reader:
        before = rss_mb(pid)
        silent = await asyncio.to_thread(silent_member, port, "/ws/chat/lobby")
        sampler = RSSSampler(pid)
        sampler.start()
        async with connect(url, max_size=None, compression=None) as poster:
            await asyncio.sleep(0.2)  # both joined the room before the first post
            window = asyncio.Semaphore(WINDOW)
            body = "x" * SIZE

            async def own_copies() -> None:
                for _ in range(MESSAGES):
                    await poster.recv()
                    window.release()

            received: list[int] = []

            async def read_all() -> None:
                for _ in range(MESSAGES):
                    message = json.loads(await reader.recv())
                    received.append(int(message["text"][:5]))

            copies = asyncio.create_task(own_copies())
            reading = asyncio.create_task(read_all())
            for n in range(MESSAGES):
                await window.acquire()
                await poster.send(json.dumps({"text": f"{n:05d}{body}"}))
            await asyncio.wait_for(asyncio.gather(copies, reading), 60)
        sampler.done.set()
        sampler.join()
        during = sampler.peak
        code, reason, frames = await asyncio.to_thread(read_until_close, silent)
        silent.close()
    # The memory is given back to the OS once the silent member is gone (within 8 MB).
    for _ in range(75):
        after = rss_mb(pid)
        if after - before < 8:
            break
        await asyncio.sleep(0.2)
    _, err = server.stop()
    print(f"server RSS: before {before:.1f} MB, peak during {during:.1f} MB, after {after:.1f} MB")
    assert received == list(range(MESSAGES))  # the reading member lost nothing
    assert (code, reason) == (1013, "slow consumer")
    assert frames < MESSAGES
    assert during - before < CEILING_MB, (before, during, after)
    assert after - before < 8, (before, during, after)
    warnings = [line for line in err.splitlines() if "slow consumer" in line]
    assert len(warnings) == 1, err
    assert "WARNING" in warnings[0] and "127.0.0.1:" in warnings[0]
    assert "Traceback" not in err
