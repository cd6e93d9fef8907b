"""Per-message cost of a layer's local path: ``send`` / ``group_send`` + ``receive_local``.

What the hub does for every event between connections of one process: a send to a
channel made by ``new_channel()`` (or a group message to N of them) followed by the
reader's ``receive_local()``. No sockets, so a change of a tenth of a microsecond shows::

    .venv/bin/python bench/tools/layer_local.py                       # memory://
    .venv/bin/python bench/tools/layer_local.py --members 200 1000    # group sizes
    .venv/bin/python bench/tools/layer_local.py --layer sqlite:///tmp/bench.db

Each figure is the best of ``--batches`` batches (µs per send; per member for groups).
To compare two trees on the same run, call it with ``PYTHONPATH=<other tree>`` too.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from chanlite.layers import BaseLayer, get_layer


async def _direct(layer: BaseLayer, n: int) -> float:
    channel = await layer.new_channel()
    message = {"type": "chat.message", "text": "hello"}
    send, receive_local = layer.send, layer.receive_local
    start = time.perf_counter()
    for _ in range(n):
        await send(channel, message)
        await receive_local()
    return (time.perf_counter() - start) / n


async def _join(layer: BaseLayer, members: int) -> str:
    group = f"bench-{members}"
    for _ in range(members):
        await layer.group_add(group, await layer.new_channel())
    return group


async def _group(layer: BaseLayer, group: str, n: int, members: int) -> float:
    message = {"type": "chat.message", "text": "hello"}
    group_send, receive_local = layer.group_send, layer.receive_local
    start = time.perf_counter()
    for _ in range(n):
        await group_send(group, message)
        channels, _ = await receive_local()
        assert len(channels) == members
    return (time.perf_counter() - start) / n / members


async def main(args: argparse.Namespace) -> dict[str, float]:
    layer = get_layer(args.layer)
    results: dict[str, float] = {}
    try:
        await _direct(layer, 1000)  # warm up
        results["send+receive_local, 1 local member"] = min(
            [await _direct(layer, args.n) for _ in range(args.batches)]
        )
        for members in args.members:
            n = max(10, args.n // members)
            group = await _join(layer, members)
            await _group(layer, group, 10, members)
            results[f"group_send+receive_local, per member of {members}"] = min(
                [await _group(layer, group, n, members) for _ in range(args.batches)]
            )
    finally:
        await layer.close()
    return results


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="memory://")
    parser.add_argument("-n", type=int, default=20_000, help="sends per batch")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--members", type=int, nargs="*", default=[200, 1000])
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    runner: Any = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    for name, seconds in runner(main(args)).items():
        print(f"{name:50s} {seconds * 1e6:8.3f} µs")


if __name__ == "__main__":
    run()
