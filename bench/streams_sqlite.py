"""Benchmark history and presence on the SQLite layer, across real OS processes.

    .venv/bin/python bench/streams_sqlite.py                    # everything, ~2 minutes
    .venv/bin/python bench/streams_sqlite.py --only fanout,resume

Scenarios (the sender is this process, receivers and churners are spawned processes):

* ``fanout``: ``group_send`` to a group with history vs the same to a plain group, 200 and
  1000 members split over two receiving processes, many sends in flight and one at a
  time. Deliveries (members x messages) per CPU-second of all three processes (every
  thread: the writer, the readers, the event loops); the two kinds alternate, several
  rounds each, and the median round is reported.
* ``resume``: a connection that missed 100 messages joins again: ``group_add`` then
  ``history(group, since)`` returning exactly those 100; p50/p99 over many resumes.
* ``presence``: ``presence(group)`` of a 10,000-member group; p50/p99 and CPU per call.
* ``churn``: two processes each open and close 500 connections a second (``group_add`` +
  ``presence_join``, ``presence_leave`` + ``group_discard`` a second later) in 100 rooms,
  then in one room; this process watches the rooms. ``churn1``: the same 1,000 a second
  from one process, in 100 rooms. CPU of each process, join-to-diff latency as the
  watcher sees it, and how long the join and leave calls take.

Timestamps are ``time.monotonic_ns()``, one system-wide clock on Linux.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from chanlite_sqlite import SQLiteLayer

from chanlite.layers import HistoryPolicy, StreamPosition

CONTEXT = multiprocessing.get_context("spawn")
HISTORY = {"room.*": HistoryPolicy(size=1000)}
OPTIONS: dict[str, Any] = {"capacity": 1_000_000, "history": HISTORY}
GROUPS = {"history": "room.bench", "plain": "plain.bench"}


def percentiles(samples_ns: list[int]) -> str:
    ms = sorted(s / 1e6 for s in samples_ns)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  max {ms[-1]:.2f} ms  (n={len(ms)})"


# -- fan-out: history vs plain ----------------------------------------------------------


def receiver(db: str, members: int, conn: Connection) -> None:
    asyncio.run(_receiver(db, members, conn))


async def _receiver(db: str, members: int, conn: Connection) -> None:
    layer = SQLiteLayer(db, **OPTIONS)
    channels = [await layer.new_channel() for _ in range(members)]
    for group in GROUPS.values():
        await asyncio.gather(*(layer.group_add(group, channel) for channel in channels))
    conn.send("ready")
    cpu = deliveries = 0.0
    while True:
        got, message = await layer.receive_local()
        kind = message["type"]
        if kind == "bench.start":
            cpu, deliveries = time.process_time(), 0
        elif kind == "bench.stop":
            conn.send((time.process_time() - cpu, deliveries))
        elif kind == "bench.exit":
            break
        else:
            deliveries += len(got)
    await layer.close()


async def _round(
    layer: SQLiteLayer, conns: list[Connection], group: str, count: int, window: int
) -> tuple[float, float, float]:
    """One measured round: deliveries per CPU-second, and the CPU per message (us) of the
    sender and of the two receivers together."""
    await layer.group_send(group, {"type": "bench.start"})
    await asyncio.sleep(0.2)  # the receivers have read "start" before the clock runs
    numbers = iter(range(count))

    async def worker() -> None:
        for i in numbers:
            await layer.group_send(group, {"type": "bench.msg", "i": i, "pad": "x" * 100})

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(window)))
    sender_cpu = time.process_time() - cpu
    await layer.group_send(group, {"type": "bench.stop"})
    results = [conn.recv() for conn in conns]
    receivers_cpu = sum(c for c, _ in results)
    deliveries = sum(d for _, d in results)
    per_message = 1e6 / count
    return (
        deliveries / (sender_cpu + receivers_cpu),
        sender_cpu * per_message,
        receivers_cpu * per_message,
    )


async def bench_fanout(db: str, rounds: int) -> None:
    for members in (200, 1000):
        procs, conns = [], []
        for _ in range(2):
            ours, theirs = CONTEXT.Pipe()
            proc = CONTEXT.Process(target=receiver, args=(db, members // 2, theirs))
            proc.start()
            procs.append(proc)
            conns.append(ours)
        for conn in conns:
            conn.recv()
        layer = SQLiteLayer(db, **OPTIONS)
        await layer.group_discard("warm", "up")
        await asyncio.sleep(0.3)
        for window, count in ((64, 5000), (1, 1500)):
            results: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in GROUPS}
            for _ in range(rounds):
                for kind, group in GROUPS.items():  # alternate: the machine's load is shared
                    results[kind].append(await _round(layer, conns, group, count, window))
            rate = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
            send = {k: statistics.median(r[1] for r in v) for k, v in results.items()}
            recv = {k: statistics.median(r[2] for r in v) for k, v in results.items()}
            print(
                f"fanout   {members:>4} members, {window:>2} in flight, {count} msgs x {rounds} "
                f"rounds: deliveries per CPU-second plain {rate['plain']:,.0f}, history "
                f"{rate['history']:,.0f} = {rate['history'] / rate['plain']:.0%}; CPU per "
                f"message sender {send['plain']:.0f} -> {send['history']:.0f} us, receivers "
                f"{recv['plain']:.0f} -> {recv['history']:.0f} us"
            )
        for group in GROUPS.values():
            await layer.group_send(group, {"type": "bench.exit"})
            break
        for proc in procs:
            proc.join()
        await layer.close()


# -- resume -----------------------------------------------------------------------------


async def bench_resume(db: str, count: int) -> None:
    layer = SQLiteLayer(db, **OPTIONS)
    group = "room.resume"
    await layer.group_send(group, {"type": "warm"})
    whole, read_only = [], []
    for n in range(count):
        since: StreamPosition = await layer.stream_position(group)
        for i in range(100):
            await layer.group_send(group, {"type": "chat.message", "i": i, "text": "y" * 80})
        channel = await layer.new_channel()
        start = time.monotonic_ns()
        await layer.group_add(group, channel)
        middle = time.monotonic_ns()
        page = await layer.history(group, since)
        end = time.monotonic_ns()
        assert len(page.events) == 100 and page.events[0]["offset"] == since.offset + 1, n
        whole.append(end - start)
        read_only.append(end - middle)
        await layer.group_discard(group, channel)
    print(f"resume   100 missed messages, group_add + history(since): {percentiles(whole)}")
    print(f"resume   100 missed messages, history(since) alone:       {percentiles(read_only)}")
    await layer.close()


# -- presence listing ---------------------------------------------------------------------


async def bench_presence(db: str, members: int, calls: int) -> None:
    layer = SQLiteLayer(db, **OPTIONS)
    group = "room.big"
    channels = [await layer.new_channel() for _ in range(members)]
    start = time.monotonic()
    for first in range(0, members, 500):
        await asyncio.gather(
            *(
                layer.presence_join(group, ch, f"user{i}", {"nick": f"user {i}", "tab": 1})
                for i, ch in enumerate(channels[first : first + 500], first)
            )
        )
    joined = time.monotonic() - start
    samples = []
    cpu = time.process_time()
    for _ in range(calls):
        t = time.monotonic_ns()
        listing = await layer.presence(group)
        samples.append(time.monotonic_ns() - t)
        assert len(listing) == members
    per_call = (time.process_time() - cpu) / calls * 1e3
    print(
        f"presence list of {members:,} members: {percentiles(samples)}; CPU {per_call:.1f} ms "
        f"per call (joining them took {joined:.1f} s, in batches of 500)"
    )
    await layer.close()


# -- join/leave churn ---------------------------------------------------------------------


def churner(db: str, rate: int, seconds: float, rooms: int, conn: Connection) -> None:
    asyncio.run(_churner(db, rate, seconds, rooms, conn))


async def _churner(db: str, rate: int, seconds: float, rooms: int, conn: Connection) -> None:
    layer = SQLiteLayer(db, **OPTIONS)
    await layer.group_discard("warm", "up")
    conn.send("ready")
    conn.recv()  # go
    joins: list[int] = []
    leaves: list[int] = []
    tasks = []
    pid = os.getpid()

    async def drain() -> None:  # the connections read their events, as a server's would
        while True:
            await layer.receive_local()

    reader = asyncio.ensure_future(drain())

    async def connection(i: int) -> None:
        channel = await layer.new_channel()
        room = f"room.churn{i % rooms}"
        t = time.monotonic_ns()
        await layer.group_add(room, channel)
        await layer.presence_join(room, channel, f"u{pid}.{i}", {"t": t})
        joins.append(time.monotonic_ns() - t)
        await asyncio.sleep(1.0)
        t = time.monotonic_ns()
        await layer.presence_leave(room, channel)
        await layer.group_discard(room, channel)
        leaves.append(time.monotonic_ns() - t)

    cpu, wall = time.process_time(), time.monotonic()
    begin = time.monotonic()
    total = int(rate * seconds)
    late = 0.0  # how far behind its schedule the opening of connections fell
    for i in range(total):
        delay = begin + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        late = max(late, -delay)
        tasks.append(asyncio.ensure_future(connection(i)))
    await asyncio.gather(*tasks)
    usage = (time.process_time() - cpu) / (time.monotonic() - wall)
    reader.cancel()
    conn.send((joins, leaves, usage, late))
    await layer.close()


async def bench_churn(db: str, rate: int, seconds: float, rooms: int, processes: int = 2) -> None:
    watcher_layer = SQLiteLayer(db, **OPTIONS)
    watcher = await watcher_layer.new_channel()
    for room in range(rooms):
        await watcher_layer.group_add(f"room.churn{room}", watcher)
    procs, conns = [], []
    for _ in range(processes):
        ours, theirs = CONTEXT.Pipe()
        share = rate // processes
        proc = CONTEXT.Process(target=churner, args=(db, share, seconds, rooms, theirs))
        proc.start()
        procs.append(proc)
        conns.append(ours)
    for conn in conns:
        conn.recv()
    expected = processes * int(rate // processes * seconds) * 2
    latencies: list[int] = []
    seen = 0
    cpu, wall = time.process_time(), time.monotonic()
    for conn in conns:
        conn.send("go")
    while seen < expected:
        _, event = await asyncio.wait_for(watcher_layer.receive_local(), 30)
        now = time.monotonic_ns()
        if event.get("type") != "presence.diff":
            continue
        seen += 1
        for metas in event["joins"].values():
            latencies.extend(now - meta["t"] for meta in metas)
    usage = (time.process_time() - cpu) / (time.monotonic() - wall)
    results = [conn.recv() for conn in conns]
    for proc in procs:
        proc.join()
    rows = sum([len(await watcher_layer.presence(f"room.churn{r}")) for r in range(rooms)])
    await watcher_layer.close()
    where = "one room" if rooms == 1 else f"{rooms} rooms"
    print(
        f"churn    {rate:,} connections/s over {processes} process{'es' if processes > 1 else ''} "
        f"in {where} for {seconds:g} s (each "
        f"joins, then leaves 1 s later; every diff goes to the room's ~{2 * rate // rooms} "
        f"members): {seen:,} diffs seen, {rows} left listed"
    )
    for n, (joins, leaves, cpu_share, late) in enumerate(results, 1):
        print(
            f"churn    process {n}: CPU {cpu_share:.0%} of one core; presence_join (with "
            f"group_add) {percentiles(joins)}; presence_leave (with group_discard) "
            f"{percentiles(leaves)}; opening fell behind schedule by up to {late * 1e3:.0f} ms"
        )
    print(f"churn    watcher: join -> diff received {percentiles(latencies)}; CPU {usage:.0%}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="fanout,resume,presence,churn,churn1")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, sqlite "
        f"{sqlite3.sqlite_version}, load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for name in ("fanout", "resume", "presence", "churn", "churn1"):
            if name not in only:
                continue
            db = str(Path(folder) / f"{name}.db")
            if name == "fanout":
                await bench_fanout(db, args.rounds)
            elif name == "resume":
                await bench_resume(db, 300)
            elif name == "presence":
                await bench_presence(db, 10_000, 30)
            elif name == "churn":
                await bench_churn(db, 1000, 10, 100)
                await bench_churn(db.replace(".db", "1.db"), 1000, 10, 1)
            else:  # the same churn from one process: no other process's lock to wait for
                await bench_churn(db, 1000, 10, 100, processes=1)
    print(f"load average at the end {os.getloadavg()[0]:.2f} (other work shares these CPUs)")


if __name__ == "__main__":
    asyncio.run(main())
