"""The Redis layer past one server: how long a Sentinel failover interrupts delivery.

    .venv/bin/python bench/redis_ha.py failover [--rounds 3] [--down-after 1000]

**failover** - a master, a replica and three sentinels on loopback
(``redis-server --sentinel``, ``down-after-milliseconds`` as given), two chanlite
processes broadcasting to each other every few milliseconds (the test's
``failover_peer.py``). The master is killed with SIGKILL; reported per round: the time
from the kill to the first delivery of a message sent after it (per receiving process),
the time until the sentinels all named the new master, how many ``group_send`` calls
raised meanwhile, and how many messages each receiver counted as lost.
"""

from __future__ import annotations

import argparse
import asyncio
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
    args = parser.parse_args()
    if args.what == "failover":
        asyncio.run(failover(args.rounds, args.down_after))


if __name__ == "__main__":
    main()
