"""What chanlite's server spends in Python per handshake and per echo round trip.

Drives the server's own protocol objects (HTTPConnection, then WebSocketConnection after
the upgrade) on uvloop through an in-memory transport: no sockets, no kernel, no load
generator, so a change of a microsecond shows where the live benchmark's run-to-run noise
(up to 10 %) hides it. The live server spends about 1.3x (echo) to 2x (handshakes) these
times in Python, because the kernel's work between callbacks leaves the caches cold::

    .venv/bin/python bench/tools/inprocess.py                       # the bench App
    .venv/bin/python bench/tools/inprocess.py --app raw_asgi:app    # the raw ASGI floor
    .venv/bin/python bench/tools/inprocess.py --profile             # + cProfile (slower)
    .venv/bin/python bench/tools/inprocess.py --members 1000        # broadcast to 1000 sockets

Each figure is the best of 10 batches. The handshake is split in phases: the upgrade
request (HTTP parsing, the WebSocket objects, the app's task), the app running until the
101 is written, and the client's close frame until the transport is closed. The broadcast
figure is ``app.broadcast`` from one socket to ``--members`` others (default 200) through
the App's layer and hub, per member delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import os
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from websockets.frames import Close, Frame, Opcode
from websockets.utils import apply_mask

from chanlite.server.config import Config
from chanlite.server.connection import HTTPConnection
from chanlite.server.state import ServerState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "apps"))

UPGRADE = (
    b"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
CLOSE = Frame(Opcode.CLOSE, Close(1000, "").serialize()).serialize(mask=True, extensions=[])
_MASK = os.urandom(4)
TEXT = bytes((0x81, 0x80 | 32)) + _MASK + apply_mask(b"x" * 32, _MASK)  # 32 bytes, masked


class MemoryTransport:
    """Just enough of a transport: records writes, closes through the loop like uvloop."""

    def __init__(self) -> None:
        self.protocol: Any = None
        self.closing = False
        self.writes = 0
        self.written: asyncio.Future[None] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.written is not None and not self.written.done():
            self.written.set_result(None)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closing

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _open(state: ServerState, loop: asyncio.AbstractEventLoop) -> MemoryTransport:
    transport = MemoryTransport()
    conn = HTTPConnection(state, loop)
    transport.protocol = conn
    conn.connection_made(transport)  # type: ignore[arg-type]
    return transport


async def _until(condition: Callable[[], bool]) -> None:
    # Yield whole loop iterations, as the server's callbacks and tasks take them.
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0)


async def handshakes(state: ServerState, n: int) -> dict[str, float]:
    """Best-of-10 microseconds per phase of n whole WebSocket lifetimes."""
    loop = asyncio.get_running_loop()
    clock = time.perf_counter_ns
    phases: dict[str, float] = {
        "upgrade request": 0.0,
        "app until the 101": 0.0,
        "close frame to closed": 0.0,
    }
    names = list(phases)

    async def one(totals: list[int]) -> None:
        t0 = clock()
        transport = _open(state, loop)
        transport.protocol.data_received(UPGRADE)
        t1 = clock()
        await _until(lambda: transport.writes > 0)
        await asyncio.sleep(0)  # the app reaches its receive
        t2 = clock()
        transport.protocol.data_received(CLOSE)
        await _until(lambda: transport.closing)
        await _until(lambda: not state.tasks)  # the app's task has finished
        t3 = clock()
        totals[0] += t1 - t0
        totals[1] += t2 - t1
        totals[2] += t3 - t2

    for _ in range(500):
        await one([0, 0, 0])
    best: list[int] | None = None
    for _ in range(10):
        totals = [0, 0, 0]
        for _ in range(n // 10):
            await one(totals)
        if best is None or sum(totals) < sum(best):
            best = totals
    assert best is not None
    for name, total in zip(names, best, strict=True):
        phases[name] = total / (n // 10) / 1000
    return phases


async def echoes(state: ServerState, n: int) -> float:
    """Best-of-10 microseconds per 32-byte text round trip on one open WebSocket."""
    loop = asyncio.get_running_loop()
    transport = _open(state, loop)
    transport.protocol.data_received(UPGRADE)
    await _until(lambda: transport.writes > 0)

    async def one() -> None:
        transport.written = loop.create_future()
        transport.protocol.data_received(TEXT)
        await transport.written

    for _ in range(2000):
        await one()
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        for _ in range(n // 10):
            await one()
        best = min(best, time.perf_counter() - start)
    transport.protocol.data_received(CLOSE)
    return best / (n // 10) * 1e6


class Tally:
    """Writes to many transports, and a future set when they reach a target."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached: asyncio.Future[None] | None = None

    def add(self) -> None:
        self.count += 1
        reached = self.reached
        if self.count >= self.target and reached is not None and not reached.done():
            reached.set_result(None)


class MemberTransport(MemoryTransport):
    """A member socket's transport: its writes go to a shared :class:`Tally`."""

    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self.tally = tally

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.tally.add()


async def broadcasts(state: ServerState, members: int, n: int) -> float:
    """Best-of-10 microseconds per member delivery of ``app.broadcast`` (the bench App's
    /ws/pub) to *members* sockets on /ws/sub: the layer, the hub's reader, the frame
    encoded once and written to each member's transport."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    subs = []
    for _ in range(members):
        transport = MemberTransport(tally)
        conn = HTTPConnection(state, loop)
        transport.protocol = conn
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(UPGRADE.replace(b"/ws/echo", b"/ws/sub"))
        subs.append(transport)
    pub = _open(state, loop)
    pub.protocol.data_received(UPGRADE.replace(b"/ws/echo", b"/ws/pub"))
    await _until(lambda: pub.writes > 0 and tally.count >= members)
    await asyncio.sleep(0.1)  # every member has joined the group

    async def one() -> None:
        tally.target = tally.count + members
        tally.reached = loop.create_future()
        pub.protocol.data_received(TEXT)
        await tally.reached

    for _ in range(200):
        await one()
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        for _ in range(n // 10):
            await one()
        best = min(best, time.perf_counter() - start)
    for transport in [pub, *subs]:
        transport.protocol.data_received(CLOSE)
    await _until(lambda: not state.tasks)
    return best / (n // 10) / members * 1e6


async def floor(n: int) -> float:
    """What the harness itself costs per await of a future set by a callback."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    for _ in range(n):
        future = loop.create_future()
        loop.call_soon(future.set_result, None)
        await future
    return (time.perf_counter() - start) / n * 1e6


async def main(target: str, n: int, profile: bool, members: int) -> None:
    module, _, attr = target.partition(":")
    app = getattr(importlib.import_module(module), attr or "app")
    state = ServerState(Config(app=app, access_log=False), app)
    state.date = b"Tue, 24 Nov 2026 12:00:00 GMT"
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    phases = await handshakes(state, n)
    echo = await echoes(state, n * 5)
    delivery = await broadcasts(state, members, max(100, n // 20)) if members else None
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    print(f"{target}: handshake {sum(phases.values()):.1f} us")
    for name, us in phases.items():
        print(f"  {us:6.1f} us  {name}")
    print(f"{target}: echo round trip {echo:.2f} us")
    if delivery is not None:
        print(f"{target}: broadcast to {members}: {delivery:.3f} us per member delivery")
    print(f"  (harness: {await floor(n):.2f} us per awaited callback, in both figures)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default="chanlite_app:app", help="module:attribute")
    parser.add_argument("-n", type=int, default=20000, help="handshakes (echoes: 5x)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top 25")
    parser.add_argument(
        "--members", type=int, default=200, help="broadcast to this many sockets (0: skip)"
    )
    args = parser.parse_args()
    uvloop.run(main(args.app, args.n, args.profile, args.members))
