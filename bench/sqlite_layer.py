"""Benchmark the SQLite channel layer across real OS processes.

    .venv/bin/python bench/sqlite_layer.py            # everything, ~1 minute
    .venv/bin/python bench/sqlite_layer.py --only latency,idle

Scenarios (the sender is this process, receivers are spawned processes):

* ``latency``: light load (one message every 5 ms), time from the start of ``send`` /
  ``group_send`` in one process to ``receive_local`` returning in another; p50/p99/max.
* ``throughput``: sustained ``group_send`` from one process to a member in another, with
  many sends in flight (the way a busy server calls it), and one at a time.
* ``fanout``: one group message to 1000 members split over two processes; time until both
  processes hold their single ``(500 members, message)`` item.
* ``idle``: CPU used by a process whose layer is open, registered and idle.

Timestamps are ``time.monotonic_ns()``, one system-wide clock on Linux.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from chanlite_sqlite import SQLiteLayer

CONTEXT = multiprocessing.get_context("spawn")
OPTIONS: dict[str, Any] = {"capacity": 1_000_000}


# -- the receiving process -----------------------------------------------------------------


def receiver(db: str, members: int, expect: int, conn: Connection) -> None:
    asyncio.run(_receiver(db, members, expect, conn))


async def _receiver(db: str, members: int, expect: int, conn: Connection) -> None:
    layer = SQLiteLayer(db, **OPTIONS)
    channels = [await layer.new_channel() for _ in range(members)]
    await asyncio.gather(*(layer.group_add("bench", channel) for channel in channels))
    conn.send(channels[0])
    latencies: list[int] = []
    first = last = 0
    received = 0
    cpu = time.process_time()
    while received < expect:
        got, message = await layer.receive_local()
        now = time.monotonic_ns()
        if message["type"] == "bench.stop":
            break
        first = first or now
        last = now
        latencies.append(now - message["t"])
        received += len(got) if message["type"] == "bench.count" else 1
    conn.send((latencies, first, last, received, time.process_time() - cpu))
    await layer.close()


def idle_process(db: str, seconds: float, conn: Connection) -> None:
    asyncio.run(_idle(db, seconds, conn))


async def _idle(db: str, seconds: float, conn: Connection) -> None:
    layer = SQLiteLayer(db)
    channel = await layer.new_channel()
    await layer.group_add("idle", channel)
    await asyncio.sleep(1)  # let start-up settle
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    conn.send((time.process_time() - cpu) / (time.monotonic() - wall))
    await layer.close()


def start_receiver(db: str, members: int, expect: int) -> tuple[Any, Connection, str]:
    ours, theirs = CONTEXT.Pipe()
    proc = CONTEXT.Process(target=receiver, args=(db, members, expect, theirs))
    proc.start()
    channel = ours.recv()
    return proc, ours, channel


# -- scenarios ----------------------------------------------------------------------------------


def percentiles(samples_ns: list[int]) -> str:
    ms = sorted(s / 1e6 for s in samples_ns)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  max {ms[-1]:.2f} ms  (n={len(ms)})"


async def bench_latency(db: str, count: int) -> None:
    for kind in ("send", "group_send"):
        proc, conn, channel = start_receiver(db, 1, count)
        layer = SQLiteLayer(db, **OPTIONS)
        await layer.group_add("warm", "nobody")
        await asyncio.sleep(0.3)  # the receiver learns about us through the peer list
        for i in range(count):
            message = {"type": "bench.latency", "i": i, "t": time.monotonic_ns()}
            if kind == "send":
                await layer.send(channel, message)
            else:
                await layer.group_send("bench", message)
            await asyncio.sleep(0.005)
        latencies, *_ = conn.recv()
        proc.join()
        await layer.close()
        print(f"latency  {kind:<10} light load (200 msg/s): {percentiles(latencies)}")


async def _send_all(layer: SQLiteLayer, numbers: Iterator[int]) -> None:
    for i in numbers:
        await layer.group_send("bench", {"type": "bench.count", "i": i, "t": time.monotonic_ns()})


async def bench_throughput(db: str, count: int, window: int) -> None:
    for in_flight in (window, 1):
        total = count if in_flight > 1 else count // 5
        proc, conn, _ = start_receiver(db, 1, total)
        layer = SQLiteLayer(db, **OPTIONS)
        await layer.group_add("warm", "nobody")
        await asyncio.sleep(0.3)
        numbers = iter(range(total))
        start = time.monotonic_ns()
        cpu = time.process_time()
        await asyncio.gather(*(_send_all(layer, numbers) for _ in range(in_flight)))
        sent = time.monotonic_ns()
        cpu = time.process_time() - cpu
        latencies, _first, last, received, receiver_cpu = conn.recv()
        proc.join()
        if in_flight > 1:
            await asyncio.sleep(3)  # a few heartbeats: trimming has run
            rows, sizes = _file_state(db)
        await layer.close()
        print(
            f"throughput group_send, {in_flight:>3} in flight: {total} messages, "
            f"sent at {total / ((sent - start) / 1e9):,.0f}/s, "
            f"delivered at {received / ((last - start) / 1e9):,.0f}/s in the other process; "
            f"latency {percentiles(latencies)}; CPU per message: sender "
            f"{cpu / total * 1e6:.1f} us, receiver {receiver_cpu / total * 1e6:.1f} us"
        )
        if in_flight > 1:
            print(
                f"size     after {total} messages and 3 s: {rows} rows left, file "
                f"{sizes[''] / 1e6:.1f} MB + WAL {sizes['-wal'] / 1e6:.1f} MB"
            )


def _file_state(db: str) -> tuple[int, dict[str, int]]:
    """Rows left in the messages table, and the sizes of the file and its WAL."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        rows = int(conn.execute("SELECT count(*) FROM chanlite_messages").fetchone()[0])
    finally:
        conn.close()
    return rows, {suffix: os.path.getsize(db + suffix) for suffix in ("", "-wal")}


async def bench_fanout(db: str, rounds: int) -> None:
    receivers = [start_receiver(db, 500, 500 * rounds) for _ in range(2)]
    layer = SQLiteLayer(db, **OPTIONS)
    await layer.group_add("warm", "nobody")
    await asyncio.sleep(0.3)
    for i in range(rounds):
        await layer.group_send("bench", {"type": "bench.count", "i": i, "t": time.monotonic_ns()})
        await asyncio.sleep(0.02)
    results = [conn.recv() for _, conn, _ in receivers]
    for proc, _, _ in receivers:
        proc.join()
    await layer.close()
    # Each item holds one process's 500 members; a round is done when both have theirs.
    per_round = [max(pair) for pair in zip(results[0][0], results[1][0], strict=True)]
    delivered = sum(result[3] for result in results)
    print(
        f"fanout   1000 members over 2 processes, {rounds} messages: {percentiles(per_round)}; "
        f"{delivered} member deliveries, 1 row and 1 item per process per message"
    )


def bench_idle(db: str, seconds: float) -> None:
    ours, theirs = CONTEXT.Pipe()
    procs = []
    for _ in range(2):
        proc = CONTEXT.Process(target=idle_process, args=(db, seconds, theirs))
        proc.start()
        procs.append(proc)
    shares = [ours.recv() for _ in procs]
    for proc in procs:
        proc.join()
    text = ", ".join(f"{share * 100:.2f}%" for share in shares)
    print(f"idle     CPU per process over {seconds:g} s (layer open, member of a group): {text}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="latency,throughput,fanout,idle")
    parser.add_argument("--count", type=int, default=1000, help="latency samples per kind")
    parser.add_argument("--messages", type=int, default=50_000, help="throughput messages")
    parser.add_argument("--window", type=int, default=256, help="group_sends in flight")
    parser.add_argument("--rounds", type=int, default=200, help="fan-out messages")
    parser.add_argument("--idle-seconds", type=float, default=10)
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, sqlite {_sqlite_version()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("latency", "throughput", "fanout", "idle"):
            if name not in only:
                continue
            db = str(Path(tmp) / f"{name}.db")
            if name == "latency":
                await bench_latency(db, args.count)
            elif name == "throughput":
                await bench_throughput(db, args.messages, args.window)
            elif name == "fanout":
                await bench_fanout(db, args.rounds)
            else:
                bench_idle(db, args.idle_seconds)
    print(f"load average at the end {os.getloadavg()[0]:.2f} (other work shares these CPUs)")


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


if __name__ == "__main__":
    asyncio.run(main())
