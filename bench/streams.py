"""History and presence through the App, memory and SQLite side by side in one run.

    .venv/bin/python bench/streams.py [--rounds 5] [--messages 300] [--resumes 200]
        [--presence 10000] [--layers memory,sqlite,redis]

``redis`` starts its own ``redis-server`` (persistence off) on a free port.

* **broadcast with history vs without** -- ``app.broadcast`` to a group of 200 and of 1000
  members, one process: the hub's reader takes each message off the layer and writes its
  frame to every member's transport (a counting stand-in for the server's frame writer,
  so sockets do not dominate). The group is a history group (size 100) or a plain one,
  alternating round by round; deliveries (frames written) per CPU-second of the process
  (every thread), median round. The history path must keep >= 80% of the plain one.
* **resume of 100 missed messages** -- ``layer.history(group, since)`` answering with the
  100 messages after *since*, and the same through a connection: ``ws.join(group,
  since=...)`` on a TestClient WebSocket until the 100th replayed frame has arrived.
  p50 / p99.
* **presence list** -- ``app.presence(group)`` of a 10,000-entry group: p50 / p99 wall
  and CPU per call.

CPU is this process's (every thread); with Redis, the server's own CPU is not counted.

Channels + channels_redis has neither history nor presence: nothing to compare there.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chanlite import App, StreamPosition, WebSocket
from chanlite.testing import TestClient

CAPACITY = 100_000  # no drops: measure delivery, not shedding


class Count:
    """Deliveries so far, and an event set when *want* of them have happened."""

    def __init__(self) -> None:
        self.n = 0
        self.want = 0
        self.done = asyncio.Event()

    def expect(self, want: int) -> None:
        self.n, self.want = 0, want
        self.done.clear()

    def add(self) -> None:
        self.n += 1
        if self.n >= self.want:
            self.done.set()


class CountingReceiver:
    """A connection stand-in: counts the broadcast frames written to it."""

    events_pending = False

    def __init__(self, count: Count) -> None:
        self.count = count
        self.frame_writer: Callable[[bytes], bool] = self._write

    def _write(self, frame: bytes) -> bool:
        self.count.add()
        return True

    def push_event(self, event: dict[str, Any]) -> bool:
        self.count.add()
        return True

    async def wait_for_room(self, timeout: float) -> None:
        return None


REDIS: list[str] = []  # the URL of the redis-server this run started


def layer_url(kind: str, tmp: Path, name: str) -> str:
    if kind == "memory":
        return f"memory://?capacity={CAPACITY}"
    if kind == "redis":
        return f"{REDIS[0]}?capacity={CAPACITY}&prefix={name}:"
    return f"sqlite:///{tmp / name}.db?capacity={CAPACITY}"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


async def fanout(kind: str, tmp: Path, members: int, messages: int, rounds: int) -> None:
    app = App(layer=layer_url(kind, tmp, f"fanout{members}"))
    app.history("h.*", size=100)
    hub = app.hub
    count = Count()
    for group in ("plain", "h.kept"):
        for _ in range(members):
            name = hub.register(CountingReceiver(count))
            await hub.group_add(group, name)
    results: dict[str, list[float]] = {"plain": [], "h.kept": []}
    try:
        for _ in range(rounds + 1):  # the first round warms up and is not counted
            for group in ("plain", "h.kept"):
                want = members * messages
                count.expect(want)
                cpu, wall = time.process_time(), time.perf_counter()
                for i in range(messages):
                    await app.broadcast(group, text=f"message {i} " + "x" * 80)
                await count.done.wait()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                results[group].append(want / cpu)
        plain = statistics.median(results["plain"][1:])
        kept = statistics.median(results["h.kept"][1:])
        print(
            f"{kind:6} broadcast to {members:4} members: plain {plain:12,.0f} "
            f"deliveries/CPU-s, with history {kept:12,.0f} ({kept / plain:.0%} of plain)"
        )
    finally:
        await hub.aclose()


async def resume(kind: str, tmp: Path, count: int) -> None:
    app = App(layer=layer_url(kind, tmp, "resume"))
    app.history("r.*", size=1000)
    layer = app.layer
    for i in range(600):
        await layer.group_send("r.room", {"type": "m", "i": i})
    position = await layer.stream_position("r.room")
    since = StreamPosition(position.offset - 100, position.epoch)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        page = await layer.history("r.room", since)
        samples.append(time.perf_counter() - start)
        assert len(page.events) == 100
    p50, p99 = percentiles(samples)
    print(f"{kind:6} resume 100 missed, layer.history:   p50 {ms(p50)}  p99 {ms(p99)}")

    @app.websocket("/r")
    async def room(ws: WebSocket) -> None:
        await ws.accept()
        await ws.join("r.room", since)
        async for _ in ws.iter_text():
            pass

    @room.on("m")
    async def message(ws: WebSocket, event: dict[str, Any]) -> None:
        await ws.send_text(str(event["i"]))

    samples = []
    async with TestClient(app) as client:
        for run in range(max(20, count // 4) + 1):
            start = time.perf_counter()
            async with client.websocket("/r") as ws:
                for _ in range(100):
                    await ws.receive_text()
                if run:  # the first connection warms up
                    samples.append(time.perf_counter() - start)
    p50, p99 = percentiles(samples)
    print(f"{kind:6} resume 100 missed, ws.join to 100th frame: p50 {ms(p50)}  p99 {ms(p99)}")


async def presence(kind: str, tmp: Path, entries: int, calls: int) -> None:
    app = App(layer=layer_url(kind, tmp, "presence"))
    layer = app.layer
    joins = time.perf_counter()
    for i in range(entries):
        channel = await layer.new_channel()
        await layer.presence_join("big", channel, f"user{i % (entries // 2)}", {"n": i})
    joins = time.perf_counter() - joins
    walls, cpus = [], []
    for _ in range(calls):
        cpu, wall = time.process_time(), time.perf_counter()
        listing = await app.presence("big")
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        assert sum(len(metas) for metas in listing.values()) == entries
    p50, p99 = percentiles(walls)
    print(
        f"{kind:6} presence list of {entries} entries: p50 {ms(p50)}  p99 {ms(p99)}  "
        f"CPU p50 {ms(statistics.median(cpus))}  (joining them took {joins:.1f} s)"
    )
    await layer.flush()  # the entries go with the data, not one leave at a time
    await app.hub.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--resumes", type=int, default=200)
    parser.add_argument("--presence", type=int, default=10_000)
    parser.add_argument("--layers", default="memory,sqlite,redis")
    args = parser.parse_args()
    kinds = args.layers.split(",")
    if "redis" in kinds:
        sys.path.insert(0, str(Path(__file__).parent))
        from redis_layer import start_redis

        server, url, _keep = start_redis()
        REDIS.append(url)
    print(f"python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    with tempfile.TemporaryDirectory() as tmp:
        for members in (200, 1000):
            for kind in kinds:
                await fanout(kind, Path(tmp), members, args.messages, args.rounds)
        for kind in kinds:
            await resume(kind, Path(tmp), args.resumes)
        for kind in kinds:
            await presence(kind, Path(tmp), args.presence, 20)
    if REDIS:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    asyncio.run(main())
