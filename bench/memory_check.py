"""What memory://'s encodability check costs: send and group_send (with the receive) per
event, checked (the default) against ``encodable_only=false``, as a ratio.

    .venv/bin/python bench/memory_check.py
"""

from __future__ import annotations

import asyncio
import time

from chanlite.layers import get_layer

N = 50_000
ROUNDS = 7
EVENT = {"type": "chat.message", "text": "hello world", "user": "alice", "n": 3}


async def per_op(url: str, kind: str) -> float:
    layer = get_layer(url)
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    start = time.perf_counter()
    for i in range(N):
        if kind == "send":
            await layer.send(channel, EVENT)
        else:
            await layer.group_send("g", EVENT)
        if i % 50 == 49:
            for _ in range(50):
                await layer.receive_local()
    elapsed = time.perf_counter() - start
    await layer.close()
    return elapsed / N * 1e9


async def main() -> None:
    for kind in ("send", "group_send"):
        checked, unchecked = [], []
        for _ in range(ROUNDS):  # interleaved, best of each: the box is shared
            checked.append(await per_op("memory://?capacity=1000", kind))
            unchecked.append(await per_op("memory://?capacity=1000&encodable_only=false", kind))
        a, b = min(checked), min(unchecked)
        print(f"{kind:<10} checked {a:6.0f} ns  unchecked {b:6.0f} ns  ratio {a / b:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
