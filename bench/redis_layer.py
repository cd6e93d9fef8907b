"""chanlite's Redis layer against channels_redis, on one local Redis server, in one run.

    .venv/bin/python bench/redis_layer.py [--url redis://127.0.0.1:6379/0]
        [--pings 1000] [--messages 200] [--members 200] [--concurrency 1] [--rounds 3]

Without ``--url`` it starts its own ``redis-server`` (persistence off) on a free port.

Workloads, identical for every layer and each run between two OS processes:

* **latency** - a ping-pong between two processes through ``send``/``receive`` on
  channels made by ``new_channel()``; reports the round trip p50/p99.
* **broadcast** - a receiver process has ``--members`` channels in one group; a sender
  process ``group_send``s ``--messages`` messages one after another. Reports the sender's
  group_send rate and the delivered rate (member deliveries per second, first send to
  last delivery; CLOCK_MONOTONIC is system-wide, so both processes read one clock).
  channels_redis consumers read with ``receive(channel)`` per member, as Channels does;
  chanlite is measured both that way and with ``receive_local()``, which is what
  chanlite's hub reads (one item per group message naming every local member).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

KINDS = {
    "chanlite": "chanlite RedisLayer, receive_local()",
    "chanlite-api": "chanlite RedisLayer, receive(channel)",
    "channels_redis": "channels_redis RedisChannelLayer",
    "channels_redis_pubsub": "channels_redis RedisPubSubChannelLayer",
}
CAPACITY = 100_000  # no drops: measure delivery, not shedding


def make_layer(kind: str, url: str, prefix: str) -> Any:
    if kind.startswith("chanlite"):
        from chanlite_redis import RedisLayer

        return RedisLayer(url, prefix=prefix, capacity=CAPACITY)
    if kind == "channels_redis":
        from channels_redis.core import RedisChannelLayer

        return RedisChannelLayer(hosts=[url], prefix=prefix, capacity=CAPACITY)
    from channels_redis.pubsub import RedisPubSubChannelLayer

    return RedisPubSubChannelLayer(hosts=[url], prefix=prefix)


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


# -- the receiving process -----------------------------------------------------------------


async def echo(kind: str, url: str, prefix: str) -> None:
    """Answer every ping on our channel to the channel named in it."""
    layer = make_layer(kind, url, prefix)
    mine = await layer.new_channel()
    emit(event="ready", channel=mine)
    while True:
        message = await layer.receive(mine)
        if message["type"] == "stop":
            break
        await layer.send(message["reply"], {"type": "pong", "i": message["i"]})
    if hasattr(layer, "close"):
        await layer.close()


async def members(kind: str, url: str, prefix: str, count: int, expected: int) -> None:
    """Hold *count* members of the group ``bench``; report when *expected* deliveries came."""
    layer = make_layer(kind, url, prefix)
    channels = [await layer.new_channel() for _ in range(count)]
    for channel in channels:
        await layer.group_add("bench", channel)
    received = 0
    finished = asyncio.Event()
    last = 0.0

    if kind == "chanlite":
        # Prime the reader (and its subscriptions) before saying ready.
        reader = asyncio.ensure_future(layer.receive_local())
        emit(event="ready")
        while received < expected:
            got, _ = await reader
            received += len(got)
            last = time.monotonic()
            if received < expected:
                reader = asyncio.ensure_future(layer.receive_local())
    else:

        async def consume(channel: str) -> None:
            nonlocal received, last
            while True:
                await layer.receive(channel)
                received += 1
                if received >= expected:
                    last = time.monotonic()
                    finished.set()

        tasks = [asyncio.ensure_future(consume(channel)) for channel in channels]
        await asyncio.sleep(0.2)  # let every consumer start waiting
        emit(event="ready")
        await finished.wait()
        for task in tasks:
            task.cancel()
    emit(event="done", last=last, received=received)
    os._exit(0)  # skip teardown of hundreds of pending receives


# -- the sending process (this one) ---------------------------------------------------------


class Peer:
    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True
        )

    def event(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("bench peer exited early")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


async def ping(kind: str, url: str, prefix: str, target: str, pings: int) -> list[float]:
    layer = make_layer(kind, url, prefix)
    mine = await layer.new_channel()
    times = []
    for i in range(pings + 50):
        start = time.perf_counter()
        await layer.send(target, {"type": "ping", "i": i, "reply": mine})
        reply = await layer.receive(mine)
        assert reply["i"] == i
        if i >= 50:  # warm-up excluded
            times.append(time.perf_counter() - start)
    await layer.send(target, {"type": "stop"})
    if hasattr(layer, "close"):
        await layer.close()
    return times


async def broadcast(
    kind: str, url: str, prefix: str, messages: int, concurrency: int
) -> tuple[float, float]:
    layer = make_layer(kind, url, prefix)
    payload = {"type": "chanlite.broadcast", "text": "x" * 100}

    async def sender(count: int) -> None:
        for _ in range(count):
            await layer.group_send("bench", payload)

    shares = [messages // concurrency + (i < messages % concurrency) for i in range(concurrency)]
    start = time.monotonic()
    await asyncio.gather(*(sender(share) for share in shares))
    sent = time.monotonic()
    if hasattr(layer, "close"):
        await layer.close()
    return start, sent


def run_kind(kind: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"bench-{kind}-{os.getpid()}"
    row: dict[str, Any] = {"kind": KINDS[kind]}
    if kind != "chanlite-api":
        peer = Peer("--role", "echo", "--kind", kind, "--url", url, "--prefix", prefix + "p")
        try:
            target = peer.event()["channel"]
            times = asyncio.run(ping(kind, url, prefix + "p", target, args.pings))
        finally:
            peer.close()
        times.sort()
        row["p50_ms"] = statistics.median(times) * 1000
        row["p99_ms"] = times[int(len(times) * 0.99) - 1] * 1000
    receiver_kind = kind
    sender_kind = "chanlite" if kind.startswith("chanlite") else kind
    expected = args.messages * args.members
    peer = Peer(
        "--role", "members", "--kind", receiver_kind, "--url", url, "--prefix", prefix + "b",
        "--members", str(args.members), "--expected", str(expected),
    )  # fmt: skip
    try:
        peer.event()  # ready
        start, sent = asyncio.run(
            broadcast(sender_kind, url, prefix + "b", args.messages, args.concurrency)
        )
        done = peer.event()
    finally:
        peer.close()
    elapsed = done["last"] - start
    row["send_per_s"] = args.messages / (sent - start)
    row["msgs_per_s"] = args.messages / elapsed
    row["deliveries_per_s"] = done["received"] / elapsed
    return row


def start_redis() -> tuple[subprocess.Popen[bytes], str, tempfile.TemporaryDirectory[str]]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found: run `make system-deps` or apt-get install redis-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    directory = tempfile.TemporaryDirectory()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", directory.name],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    return process, f"redis://127.0.0.1:{port}/0", directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--pings", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--concurrency", type=int, default=1, help="concurrent senders")
    parser.add_argument("--rounds", type=int, default=3, help="median of this many runs")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--expected", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "echo":
        asyncio.run(echo(args.kind, args.url, args.prefix))
        return
    if args.role == "members":
        asyncio.run(members(args.kind, args.url, args.prefix, args.members, args.expected))
        return
    server = None
    url = args.url
    if url is None:
        server, url, _directory = start_redis()  # kept alive until exit
    try:
        print(
            f"{args.pings} ping-pongs; broadcast of {args.messages} messages to "
            f"{args.members} members by {args.concurrency} concurrent sender(s); "
            f"median of {args.rounds} rounds; Redis at {url}\n"
        )
        header = (
            f"{'layer':42} {'rtt p50 ms':>10} {'rtt p99 ms':>10} {'send/s':>9} "
            f"{'msgs/s':>9} {'deliveries/s':>13}"
        )
        print(header)
        print("-" * len(header))
        kinds = args.kinds.split(",")
        # Kinds take turns round by round, so load from elsewhere hits them alike.
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        for _ in range(args.rounds):
            for kind in kinds:
                runs[kind].append(run_kind(kind, url, args))
        for kind in kinds:
            rows = runs[kind]

            def median(key: str, rows: list[dict[str, Any]] = rows) -> float:
                return statistics.median(row[key] for row in rows)

            p50 = f"{median('p50_ms'):.3f}" if "p50_ms" in rows[0] else "-"
            p99 = f"{median('p99_ms'):.3f}" if "p99_ms" in rows[0] else "-"
            print(
                f"{KINDS[kind]:42} {p50:>10} {p99:>10} {median('send_per_s'):>9.0f} "
                f"{median('msgs_per_s'):>9.0f} {median('deliveries_per_s'):>13.0f}",
                flush=True,
            )
    finally:
        if server is not None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
