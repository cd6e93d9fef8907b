"""History and presence on chanlite's Redis layer, measured on one local Redis server.

    .venv/bin/python bench/streams_redis.py [--url redis://127.0.0.1:6379/0]
        [--resumes 300] [--presence 10000] [--listings 20]
        [--messages 2000] [--members 200] [--rounds 5]

Without ``--url`` it starts its own ``redis-server`` (persistence off) on a free port.

* **resume** - ``history(group, since)`` answering with the 100 messages sent after
  *since* (a history group of size 1000): p50 / p99 of the call, ``--resumes`` times.
* **presence list** - ``presence(group)`` of a group with ``--presence`` entries joined
  by two layer objects: p50 / p99 wall time and CPU time of the listing process.
* **presence churn** - two processes each join ``--churn / 2`` connections a second to
  one room's group and presence, each leaving after 1 s, for ``--churn-seconds``: join
  and leave latency p50 / p99 and CPU of each process.
* **group send with history vs without** - a receiver process holds ``--members``
  channels of one group and reads with ``receive_local()``; a sender process
  ``group_send``s ``--messages`` broadcast events, to a plain group and to a history
  group (size 100), taking turns round by round. Reports deliveries per second and
  deliveries per CPU-second of the two chanlite processes (and with Redis's CPU added,
  from ``INFO cpu``); the ratio of the history path to the plain path is the point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from redis_layer import start_redis  # type: ignore[import-not-found]

from chanlite.layers import HistoryPolicy, StreamPosition

PAYLOAD = {"type": "chanlite.broadcast", "text": "x" * 100}
CAPACITY = 100_000  # no drops: measure delivery, not shedding


def make_layer(url: str, prefix: str, **options: Any) -> Any:
    from chanlite_redis import RedisLayer

    return RedisLayer(
        url,
        prefix=prefix,
        capacity=CAPACITY,
        history={"h.*": HistoryPolicy(100), "r.*": HistoryPolicy(1000)},
        **options,
    )


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)]


# -- resume ---------------------------------------------------------------------------------


async def resume(url: str, prefix: str, count: int) -> tuple[float, float]:
    sender = make_layer(url, prefix)
    reader = make_layer(url, prefix)
    times = []
    since = await reader.stream_position("r.resume")
    for i in range(count + 20):
        for n in range(100):
            await sender.group_send("r.resume", {"type": "chat.message", "text": "hi", "n": n})
        start = time.perf_counter()
        page = await reader.history("r.resume", since)
        elapsed = time.perf_counter() - start
        assert len(page.events) == 100 and page.events[0]["offset"] == since.offset + 1
        since = StreamPosition(page.events[-1]["offset"], page.position.epoch)
        if i >= 20:  # warm-up excluded
            times.append(elapsed)
    await sender.close()
    await reader.close()
    return percentiles(times)


# -- presence listing -----------------------------------------------------------------------


async def presence_list(url: str, prefix: str, entries: int, listings: int) -> dict[str, float]:
    layers = [make_layer(url, prefix), make_layer(url, prefix)]
    group = "presence.big"

    async def join(layer: Any, start: int, stop: int) -> None:
        for i in range(start, stop):
            channel = await layer.new_channel()
            await layer.presence_join(group, channel, f"user-{i}", {"nick": f"user {i}", "i": i})

    # Each layer object fills half, with 8 joiners each (joins are independent calls).
    bounds = [0, entries // 2, entries]
    jobs = []
    for k, layer in enumerate(layers):
        lo, hi = bounds[k], bounds[k + 1]
        step = max(1, (hi - lo + 7) // 8)
        jobs += [join(layer, a, min(a + step, hi)) for a in range(lo, hi, step)]
    started = time.perf_counter()
    await asyncio.gather(*jobs)
    join_seconds = time.perf_counter() - started
    listing = await layers[0].presence(group)
    assert len(listing) == entries, len(listing)
    walls, cpus = [], []
    for _ in range(listings):
        cpu, wall = time.process_time(), time.perf_counter()
        listing = await layers[0].presence(group)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    for layer in layers:
        await layer.close()
    p50, p99 = percentiles(walls)
    return {
        "p50": p50,
        "p99": p99,
        "cpu": statistics.median(cpus),
        "joins_per_s": entries / join_seconds,
    }


# -- group send with and without history ----------------------------------------------------


async def members(url: str, prefix: str, group: str, count: int, expected: int) -> None:
    """Hold *count* members of *group*; report when *expected* deliveries came."""
    layer = make_layer(url, prefix)
    channels = [await layer.new_channel() for _ in range(count)]
    for channel in channels:
        await layer.group_add(group, channel)
    received = 0
    reader = asyncio.ensure_future(layer.receive_local())
    emit(event="ready")
    cpu = time.process_time()
    last = 0.0
    while received < expected:
        got, _ = await reader
        received += len(got)
        last = time.monotonic()
        if received < expected:
            reader = asyncio.ensure_future(layer.receive_local())
    emit(event="done", last=last, received=received, cpu=time.process_time() - cpu)
    os._exit(0)


class Peer:
    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
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


async def redis_cpu(url: str) -> float:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        info = await client.info("cpu")
    finally:
        await client.aclose()
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def send(url: str, prefix: str, group: str, messages: int) -> tuple[float, float]:
    layer = make_layer(url, prefix)
    cpu = time.process_time()
    start = time.monotonic()
    for _ in range(messages):
        await layer.group_send(group, PAYLOAD)
    cpu = time.process_time() - cpu
    await layer.close()
    return start, cpu


def group_send_round(url: str, group: str, args: argparse.Namespace) -> dict[str, float]:
    prefix = f"bench-streams-{os.getpid()}-{group}-{time.monotonic_ns()}:"
    expected = args.messages * args.members
    peer = Peer(
        "--role", "members", "--url", url, "--prefix", prefix, "--group", group,
        "--members", str(args.members), "--expected", str(expected),
    )  # fmt: skip
    try:
        peer.event()  # ready
        redis_before = asyncio.run(redis_cpu(url))
        start, sender_cpu = asyncio.run(send(url, prefix, group, args.messages))
        done = peer.event()
        redis_used = asyncio.run(redis_cpu(url)) - redis_before
    finally:
        peer.close()
    elapsed = done["last"] - start
    chanlite_cpu = sender_cpu + done["cpu"]
    return {
        "deliveries_per_s": done["received"] / elapsed,
        "per_cpu_s": done["received"] / chanlite_cpu,
        "per_cpu_s_with_redis": done["received"] / (chanlite_cpu + redis_used),
        "sender_cpu_ms_per_send": sender_cpu / args.messages * 1000,
        "receiver_cpu_ms_per_msg": done["cpu"] / args.messages * 1000,
    }


# -- presence churn across processes ----------------------------------------------------------


async def churn(url: str, prefix: str, rate: float, seconds: float, lifetime: float) -> None:
    """Join and leave presence in one room at *rate* a second each, for *seconds*.

    Each "connection" is a channel that joins the group and its presence, lives
    *lifetime* seconds, then leaves both, as a chanlite server does for a socket. The
    process reads its own events (every diff reaches every live member) meanwhile.
    """
    from collections import deque

    layer = make_layer(url, prefix)
    group = "presence.churn"
    diffs = 0

    async def read() -> None:
        nonlocal diffs
        while True:
            await layer.receive_local()
            diffs += 1

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0)
    emit(event="ready")
    sys.stdin.readline()  # "go"
    joins: list[float] = []
    leaves: list[float] = []
    lags: list[float] = []
    live: deque[tuple[float, str]] = deque()
    pending: set[asyncio.Task[None]] = set()

    async def join(i: int) -> None:
        channel = await layer.new_channel()
        start = time.perf_counter()
        await layer.group_add(group, channel)
        await layer.presence_join(group, channel, f"user-{os.getpid()}-{i}", {"i": i})
        joins.append(time.perf_counter() - start)
        live.append((time.monotonic() + lifetime, channel))

    async def leave(channel: str) -> None:
        start = time.perf_counter()
        await layer.presence_leave(group, channel)
        await layer.group_discard(group, channel)
        leaves.append(time.perf_counter() - start)

    def spawn(coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        pending.add(task)
        task.add_done_callback(pending.discard)

    cpu = time.process_time()
    began = time.monotonic()
    i = 0
    while True:
        due = began + i / rate
        now = time.monotonic()
        if due >= began + seconds:
            break
        if due > now:
            await asyncio.sleep(due - now)
        lags.append(max(0.0, time.monotonic() - due))
        spawn(join(i))
        i += 1
        while live and live[0][0] <= time.monotonic():
            spawn(leave(live.popleft()[1]))
    if pending:
        await asyncio.wait(pending)
    cpu = time.process_time() - cpu
    elapsed = time.monotonic() - began
    reader.cancel()
    emit(
        event="done", joins=joins, leaves=leaves, lag=statistics.median(lags),
        cpu=cpu, elapsed=elapsed, diffs=diffs,
    )  # fmt: skip
    os._exit(0)


def churn_round(url: str, args: argparse.Namespace) -> dict[str, float]:
    prefix = f"bench-churn-{os.getpid()}-{time.monotonic_ns()}:"
    rate = args.churn / 2
    command = [
        "--role", "churn", "--url", url, "--prefix", prefix, "--rate", str(rate),
        "--seconds", str(args.churn_seconds),
    ]  # fmt: skip
    peers = [Peer(*command) for _ in range(2)]
    try:
        for peer in peers:
            peer.event()  # ready
        for peer in peers:
            assert peer.process.stdin is not None
            peer.process.stdin.write("go\n")
            peer.process.stdin.flush()
        results = [peer.event() for peer in peers]
    finally:
        for peer in peers:
            peer.close()
    joins = sorted(t for r in results for t in r["joins"])
    leaves = sorted(t for r in results for t in r["leaves"])
    join_p50, join_p99 = percentiles(joins)
    leave_p50, leave_p99 = percentiles(leaves)
    elapsed = max(r["elapsed"] for r in results)
    return {
        "joins_per_s": len(joins) / args.churn_seconds,
        "leaves_per_s": len(leaves) / max(args.churn_seconds - 1.0, 1e-9),
        "join_p50": join_p50,
        "join_p99": join_p99,
        "leave_p50": leave_p50,
        "leave_p99": leave_p99,
        "cpu_per_process": statistics.mean(r["cpu"] / r["elapsed"] for r in results),
        "lag": max(r["lag"] for r in results),
        "diffs_per_s": sum(r["diffs"] for r in results) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--resumes", type=int, default=300)
    parser.add_argument("--presence", type=int, default=10_000)
    parser.add_argument("--listings", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--expected", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--churn", type=float, default=1000, help="joins a second, 2 processes")
    parser.add_argument("--churn-seconds", type=float, default=5)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "churn":
        asyncio.run(churn(args.url, args.prefix, args.rate, args.seconds, lifetime=1.0))
        return
    if args.role == "members":
        asyncio.run(members(args.url, args.prefix, args.group, args.members, args.expected))
        return
    server = None
    url = args.url
    if url is None:
        server, url, _directory = start_redis()  # kept alive until exit
    try:
        print(f"Redis at {url}\n")
        p50, p99 = asyncio.run(resume(url, f"bench-resume-{os.getpid()}:", args.resumes))
        print(f"resume of 100 missed messages (history(since)), {args.resumes} times:")
        print(f"  p50 {p50 * 1000:.2f} ms   p99 {p99 * 1000:.2f} ms\n", flush=True)

        listing = asyncio.run(
            presence_list(url, f"bench-presence-{os.getpid()}:", args.presence, args.listings)
        )
        print(f"presence list of a {args.presence}-entry group, {args.listings} times:")
        print(
            f"  p50 {listing['p50'] * 1000:.1f} ms   p99 {listing['p99'] * 1000:.1f} ms   "
            f"CPU {listing['cpu'] * 1000:.1f} ms per listing   "
            f"(joins: {listing['joins_per_s']:.0f}/s while filling it)\n",
            flush=True,
        )

        c = churn_round(url, args)
        print(
            f"presence churn: 2 processes joining {args.churn / 2:.0f}/s each for "
            f"{args.churn_seconds:g} s, each connection leaving after 1 s (one room):"
        )
        print(
            f"  {c['joins_per_s']:.0f} joins/s and {c['leaves_per_s']:.0f} leaves/s done; "
            f"join p50 {c['join_p50'] * 1000:.2f} ms "
            f"p99 {c['join_p99'] * 1000:.2f} ms; leave p50 {c['leave_p50'] * 1000:.2f} ms "
            f"p99 {c['leave_p99'] * 1000:.2f} ms"
        )
        print(
            f"  CPU {c['cpu_per_process']:.0%} of a core per process; schedule lag p50 "
            f"{c['lag'] * 1000:.2f} ms; {c['diffs_per_s']:,.0f} diff items/s read\n",
            flush=True,
        )

        print(
            f"group send of {args.messages} broadcasts to {args.members} members "
            f"(median of {args.rounds} rounds, kinds taking turns):"
        )
        header = (
            f"  {'path':10} {'deliveries/s':>13} {'deliv./CPU-s':>13} "
            f"{'w/ Redis CPU':>13} {'sender CPU ms/send':>19} {'receiver CPU ms/msg':>20}"
        )
        print(header)
        rows: dict[str, list[dict[str, float]]] = {"plain": [], "history": []}
        for _ in range(args.rounds):
            rows["plain"].append(group_send_round(url, "bench.plain", args))
            rows["history"].append(group_send_round(url, "h.bench", args))
        medians = {
            kind: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            for kind, runs in rows.items()
        }
        for kind, m in medians.items():
            print(
                f"  {kind:10} {m['deliveries_per_s']:>13,.0f} {m['per_cpu_s']:>13,.0f} "
                f"{m['per_cpu_s_with_redis']:>13,.0f} {m['sender_cpu_ms_per_send']:>19.3f} "
                f"{m['receiver_cpu_ms_per_msg']:>20.3f}"
            )
        ratio = medians["history"]["per_cpu_s"] / medians["plain"]["per_cpu_s"]
        ratio_redis = (
            medians["history"]["per_cpu_s_with_redis"] / medians["plain"]["per_cpu_s_with_redis"]
        )
        print(
            f"  history / plain deliveries per CPU-second: {ratio:.0%} "
            f"(with Redis's CPU: {ratio_redis:.0%})"
        )
    finally:
        if server is not None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
