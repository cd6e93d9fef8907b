"""The Redis layer past one server: a Sentinel failover, and broadcast through a cluster.

    .venv/bin/python bench/redis_ha.py failover [--rounds 3] [--down-after 1000]
    .venv/bin/python bench/redis_ha.py broadcast [--messages 2000] [--groups 8]
        [--members 1000] [--receivers 2] [--concurrency 8] [--rounds 3]

**failover** - a master, a replica and three sentinels on loopback
(``redis-server --sentinel``, ``down-after-milliseconds`` as given), two chanlite
processes broadcasting to each other every few milliseconds (the test's
``failover_peer.py``). The master is killed with SIGKILL; reported per round: the time
from the kill to the first delivery of a message sent after it (per receiving process),
the time until the sentinels all named the new master, how many ``group_send`` calls
raised meanwhile, and how many messages each receiver counted as lost.

**broadcast** - one sender process ``group_send``s ``--messages`` messages, round robin
over ``--groups`` groups, ``--concurrency`` at a time; ``--receivers`` processes hold
``--members`` members of every group between them, so each message is ``--members``
deliveries across processes. Run on one ``redis-server`` and on a 3-master cluster
(``redis-cli --cluster create``), taking turns round by round. Reported: deliveries per
second (first send to last delivery) and per CPU-second of the chanlite processes, and of
those plus every redis-server (``/proc``), median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1] / "plugins" / "chanlite-redis" / "tests"
sys.path.insert(0, str(TESTS))

import redis_nodes  # noqa: E402
from test_redis_failover import FailoverPeer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def receiver(url: str, groups: int, members: int) -> None:
    from chanlite_redis import RedisLayer

    layer = RedisLayer(url, prefix="bench:", capacity=1_000_000)
    channels = [await layer.new_channel() for _ in range(members)]
    for g in range(groups):
        for channel in channels:
            await layer.group_add(f"room.{g}", channel)
    print(json.dumps({"ready": True}), flush=True)
    expected = int((await asyncio.get_running_loop().run_in_executor(None, input)).split()[0])
    deliveries = 0
    while deliveries < expected:
        got, _ = await layer.receive_local()
        deliveries += len(got)
    print(json.dumps({"done": time.monotonic(), "deliveries": deliveries}), flush=True)
    await layer.close()


async def sender(url: str, groups: int, messages: int, concurrency: int) -> None:
    from chanlite_redis import RedisLayer

    layer = RedisLayer(url, prefix="bench:")
    await layer.group_send("room.0", {"type": "warm"})  # connected before the clock starts
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, input)
    started = time.monotonic()
    payload = "x" * 64
    queue = iter(range(messages))

    async def worker() -> None:
        for n in queue:
            await layer.group_send(f"room.{n % groups}", {"type": "m", "n": n, "p": payload})

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    print(json.dumps({"started": started, "sent": time.monotonic()}), flush=True)
    await layer.close()


async def broadcast_round(url: str, servers: list[int], args: Any) -> dict[str, float]:
    per = args.members // args.receivers
    me = [sys.executable, __file__]
    procs = []
    for _ in range(args.receivers):
        procs.append(
            await asyncio.create_subprocess_exec(
                *me, "_receiver", url, str(args.groups), str(per),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )
        )  # fmt: skip
    send = await asyncio.create_subprocess_exec(
        *me, "_sender", url, str(args.groups), str(args.messages), str(args.concurrency),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    everyone = [*procs, send]
    for proc in everyone:
        assert proc.stdout is not None
        json.loads(await proc.stdout.readline())
    clients = [p.pid for p in everyone]
    before = sum(cpu_seconds(pid) for pid in clients), sum(cpu_seconds(p) for p in servers)
    expected = args.messages * per
    for proc in everyone:
        assert proc.stdin is not None
        proc.stdin.write(f"{expected}\n".encode())
        await proc.stdin.drain()
    results = []
    for proc in everyone:
        assert proc.stdout is not None
        results.append(json.loads(await proc.stdout.readline()))
    after = sum(cpu_seconds(pid) for pid in clients), sum(cpu_seconds(p) for p in servers)
    for proc in everyone:
        await proc.wait()
    started = results[-1]["started"]
    last = max(r["done"] for r in results[:-1])
    deliveries = sum(r["deliveries"] for r in results[:-1])
    cpu_clients, cpu_redis = after[0] - before[0], after[1] - before[1]
    return {
        "deliveries/s": deliveries / (last - started),
        "per client CPU-s": deliveries / cpu_clients,
        "per CPU-s with Redis": deliveries / (cpu_clients + cpu_redis),
        "redis CPU share": cpu_redis / (cpu_clients + cpu_redis),
    }


async def broadcast(args: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="chanlite-bench-") as directory:
        single = redis_nodes.RedisServer(Path(directory) / "single")
        single.directory.mkdir()
        single.start()
        cluster = redis_nodes.ClusterGroup(Path(directory) / "cluster")
        cluster.start()
        kinds = {
            "one redis-server": (single.url, [single.process.pid]),  # type: ignore[union-attr]
            "3-master cluster": (
                cluster.url,
                [n.process.pid for n in cluster.nodes],  # type: ignore[union-attr]
            ),
        }
        rows: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
        try:
            for n in range(args.rounds):
                for kind, (url, servers) in kinds.items():
                    result = await broadcast_round(url, servers, args)
                    rows[kind].append(result)
                    print(f"round {n + 1} {kind}: " + ", ".join(
                        f"{k} {v:,.2f}" if v < 1 else f"{k} {v:,.0f}" for k, v in result.items()
                    ), flush=True)  # fmt: skip
        finally:
            single.stop()
            cluster.stop()
    print(
        f"\n{args.messages} messages over {args.groups} groups of {args.members} members "
        f"({args.receivers} receiving processes), concurrency {args.concurrency}, "
        f"median of {args.rounds}:\n"
    )
    print("| Redis | deliveries/s | per CPU-second (chanlite) | per CPU-second (with Redis) |")
    print("|---|---:|---:|---:|")
    for kind, results in rows.items():
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(
            f"| {kind} | {med['deliveries/s']:,.0f} | {med['per client CPU-s']:,.0f} | "
            f"{med['per CPU-s with Redis']:,.0f} |"
        )


async def failover_round(down_after: int) -> dict[str, Any]:
    redis_nodes.DOWN_AFTER_MS = down_after
    with tempfile.TemporaryDirectory(prefix="chanlite-bench-") as directory:
        group = redis_nodes.SentinelGroup(Path(directory))
        group.start()
        peers: list[FailoverPeer] = []
        try:
            peers = [await FailoverPeer.start(group.url, "b:", name) for name in "ab"]
            for peer in peers:
                await peer.wait_for(lambda e: e["event"] == "got" and e["n"] >= 50)
            killed_at = time.time()
            new_master = group.kill_master()
            await asyncio.get_running_loop().run_in_executor(None, group.wait_failover, new_master)
            promoted = time.time() - killed_at
            firsts = [
                await peer.wait_for(lambda e: e["event"] == "got" and e["at"] > killed_at)
                for peer in peers
            ]
            lasts = {}
            for peer in peers:
                await peer.tell("stop")
                lasts[peer.name] = (await peer.wait_for(lambda e: e["event"] == "sent"))["last"]
            await peers[0].tell(f"end {lasts['b']}")
            await peers[1].tell(f"end {lasts['a']}")
            lost = [(await p.wait_for(lambda e: e["event"] == "summary"))["lost"] for p in peers]
        finally:
            for peer in peers:
                await peer.finish()
            group.stop()
    return {
        "first_delivery": [f["now"] - killed_at for f in firsts],
        "promoted": promoted,
        "failed": sum(e["event"] == "failed" for p in peers for e in p.events),
        "lost": lost,
    }


async def failover(rounds: int, down_after: int) -> None:
    results = []
    for n in range(rounds):
        result = await failover_round(down_after)
        results.append(result)
        print(
            f"round {n + 1}: first delivery after the kill "
            f"{', '.join(f'{t * 1000:.0f}' for t in result['first_delivery'])} ms; "
            f"all sentinels named the new master after {result['promoted'] * 1000:.0f} ms; "
            f"{result['failed']} group_sends raised; lost (counted) {result['lost']}",
            flush=True,
        )
    firsts = [t for r in results for t in r["first_delivery"]]
    print(
        f"down-after-milliseconds {down_after}: kill -> first delivery median "
        f"{statistics.median(firsts) * 1000:.0f} ms (min {min(firsts) * 1000:.0f}, "
        f"max {max(firsts) * 1000:.0f}) over {len(firsts)} receivers"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    fail = sub.add_parser("failover")
    fail.add_argument("--rounds", type=int, default=3)
    fail.add_argument("--down-after", type=int, default=1000)
    cast = sub.add_parser("broadcast")
    cast.add_argument("--messages", type=int, default=2000)
    cast.add_argument("--groups", type=int, default=8)
    cast.add_argument("--members", type=int, default=1000)
    cast.add_argument("--receivers", type=int, default=2)
    cast.add_argument("--concurrency", type=int, default=8)
    cast.add_argument("--rounds", type=int, default=3)
    if len(sys.argv) > 1 and sys.argv[1] == "_receiver":
        asyncio.run(receiver(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_sender":
        asyncio.run(sender(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
        return
    args = parser.parse_args()
    if args.what == "failover":
        asyncio.run(failover(args.rounds, args.down_after))
    else:
        asyncio.run(broadcast(args))


if __name__ == "__main__":
    main()
