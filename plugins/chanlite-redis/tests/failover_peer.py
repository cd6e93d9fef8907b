"""One chanlite process broadcasting to, and hearing, another through a shared Redis.

Run as ``python failover_peer.py URL PREFIX NAME``. It joins the group ``room`` with one
channel, prints ``{"event": "ready"}``, then broadcasts ``{"from": NAME, "n": 0, 1, ...,
"at": wall time}`` to ``room`` every few milliseconds, and prints each message it hears
from the other peer as ``{"event": "got", "n": ..., "at": ..., "now": ...}``. A failed
``group_send`` is printed as ``{"event": "failed", "n": ..., "error": ...}``: the caller was
told. On ``stop`` (a line on stdin) it sends one last message, retrying until Redis takes
it, and prints ``{"event": "sent", "last": n}``; once it has heard the other's last
message (``end`` on stdin names its number) and the layer's grace period has passed, it
prints ``{"event": "summary", "lost": ..., "received": [...]}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from chanlite_redis import RedisLayer

from chanlite.layers import LayerError

GROUP = "room"
EVERY = 0.005


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


async def main(url: str, prefix: str, name: str) -> None:
    layer = RedisLayer(url, prefix=prefix, timeout=1.0, heartbeat=0.5)
    channel = await layer.new_channel()
    await layer.group_add(GROUP, channel)
    received: list[int] = []
    heard_last = asyncio.Event()
    other_last: list[int] = []

    async def pump() -> None:
        while True:
            _, message = await layer.receive_local()
            if message.get("from") == name:
                continue
            received.append(message["n"])
            emit(event="got", n=message["n"], at=message["at"], now=time.time())
            if other_last and message["n"] >= other_last[0]:
                heard_last.set()

    pumping = asyncio.ensure_future(pump())
    stopping = asyncio.Event()
    emit(event="ready")

    def message(n: int) -> dict[str, Any]:
        return {"type": "m", "from": name, "n": n, "at": time.time()}

    async def broadcast() -> int:
        n = 0
        while not stopping.is_set():
            try:
                await layer.group_send(GROUP, message(n))
            except LayerError as exc:
                emit(event="failed", n=n, error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.05)
            n += 1
            await asyncio.sleep(EVERY)
        while True:  # the last one must get through: it is what reveals a trailing gap
            try:
                await layer.group_send(GROUP, message(n))
                return n
            except LayerError as exc:
                emit(event="failed", n=n, error=f"{type(exc).__name__}: {exc}")
                n += 1
                await asyncio.sleep(0.05)

    sending = asyncio.ensure_future(broadcast())
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not line:
            break
        if line[0] == "stop":
            stopping.set()
            emit(event="sent", last=await sending)
        elif line[0] == "end":
            other_last.append(int(line[1]))
            if received and max(received) >= other_last[0]:
                heard_last.set()
            await asyncio.wait_for(heard_last.wait(), 30)
            # Numbers still missing are counted as lost after the layer's grace period.
            await asyncio.sleep(layer.timeout * 2)
            emit(event="summary", lost=layer.lost[GROUP], received=received)
    pumping.cancel()
    await layer.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
