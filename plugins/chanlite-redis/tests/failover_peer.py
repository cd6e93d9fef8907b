"""One chanlite process broadcasting to, and sending directly to, another through Redis.

Run as ``python failover_peer.py URL PREFIX NAME``. It joins the group ``room`` with one
channel, prints ``{"event": "ready", "channel": ...}``, then broadcasts ``{"from": NAME,
"n": 0, 1, ..., "at": wall time}`` to ``room`` every few milliseconds; once told the other
peer's channel (``peer CHANNEL`` on stdin) it also sends ``{"type": "d", "n": 0, 1, ...}``
straight to that channel each time. It prints each message it hears from the other peer
as ``{"event": "got", ...}`` (group) or ``{"event": "gotd", ...}`` (direct). A failed send
is printed as ``{"event": "failed", "n": ..., "kind": "group" | "direct", "error": ...}``:
the caller was told; a direct send refused for a full channel as ``{"event": "full"}``.
On ``stop`` it sends one last message of each kind, retrying until Redis takes it, and
prints ``{"event": "sent", "last": n, "last_direct": n or null}``; once it has heard the
other's last messages (``end N [N_DIRECT]`` on stdin) and the layer's grace period has
passed, it prints ``{"event": "summary", "lost": ..., "dropped": ..., "received": [...],
"lost_direct": ..., "received_direct": [...]}`` (``dropped``: group messages its full
channel did not take, :attr:`~chanlite.layers.BaseLayer.drops`).

On ``halt`` it stops sending at once, with no last messages (what reveals a loss at the
end of them is then only the layer's trailing markers), and prints ``{"event": "sent",
"last": n, "last_direct": n or null}`` with the numbers of the last messages it tried to
send. On ``account`` it prints the summary at once.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from chanlite_redis import RedisLayer

from chanlite.layers import ChannelFull, LayerError

GROUP = "room"
EVERY = 0.005


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


async def main(url: str, prefix: str, name: str) -> None:
    layer = RedisLayer(url, prefix=prefix, timeout=1.0, heartbeat=0.5)
    channel = await layer.new_channel()
    await layer.group_add(GROUP, channel)
    received: list[int] = []
    received_direct: list[int] = []
    heard_last = asyncio.Event()
    other_last: list[int | None] = []
    peer: list[str] = []

    def heard_all() -> bool:
        if not other_last:
            return False
        group, direct = other_last
        return (bool(received) and max(received) >= (group or 0)) and (
            direct is None or (bool(received_direct) and max(received_direct) >= direct)
        )

    async def pump() -> None:
        while True:
            _, message = await layer.receive_local()
            if message.get("from") == name:
                continue
            now = time.time()
            if message["type"] == "d":
                received_direct.append(message["n"])
                emit(event="gotd", n=message["n"], at=message["at"], now=now)
            else:
                received.append(message["n"])
                emit(event="got", n=message["n"], at=message["at"], now=now)
            if heard_all():
                heard_last.set()

    pumping = asyncio.ensure_future(pump())
    stopping = asyncio.Event()
    halting = asyncio.Event()
    emit(event="ready", channel=channel)

    def message(n: int, kind: str = "m") -> dict[str, Any]:
        return {"type": kind, "from": name, "n": n, "at": time.time()}

    async def direct(n: int) -> bool:
        try:
            await layer.send(peer[0], message(n, "d"))
            return True
        except ChannelFull:
            emit(event="full", n=n)
        except LayerError as exc:
            emit(event="failed", n=n, kind="direct", error=f"{type(exc).__name__}: {exc}")
        return False

    async def broadcast() -> tuple[int, int | None]:
        n = d = 0
        while not stopping.is_set() and not halting.is_set():
            try:
                await layer.group_send(GROUP, message(n))
            except LayerError as exc:
                emit(event="failed", n=n, kind="group", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.05)
            n += 1
            if peer:
                if not await direct(d):
                    await asyncio.sleep(0.05)
                d += 1
            await asyncio.sleep(EVERY)
        if halting.is_set():
            return n - 1, (d - 1 if peer else None)
        # The last ones must get through: they are what reveals a trailing gap.
        while True:
            try:
                await layer.group_send(GROUP, message(n))
                break
            except LayerError as exc:
                emit(event="failed", n=n, kind="group", error=f"{type(exc).__name__}: {exc}")
                n += 1
                await asyncio.sleep(0.05)
        if not peer:
            return n, None
        while not await direct(d):
            d += 1
            await asyncio.sleep(0.05)
        return n, d

    def summary() -> None:
        emit(
            event="summary",
            lost=layer.lost[GROUP],
            dropped=layer.drops[GROUP],
            received=received,
            lost_direct=layer.lost["!inbox"],
            received_direct=received_direct,
        )

    sending = asyncio.ensure_future(broadcast())
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not line:
            break
        if line[0] == "peer":
            peer.append(line[1])
        elif line[0] == "stop":
            stopping.set()
            last, last_direct = await sending
            emit(event="sent", last=last, last_direct=last_direct)
        elif line[0] == "halt":
            halting.set()
            last, last_direct = await sending
            emit(event="sent", last=last, last_direct=last_direct)
        elif line[0] == "account":
            summary()
        elif line[0] == "end":
            other_last.extend([int(line[1]), int(line[2]) if len(line) > 2 else None])
            if heard_all():
                heard_last.set()
            await asyncio.wait_for(heard_last.wait(), 30)
            # Numbers still missing are counted as lost after the layer's grace period.
            await asyncio.sleep(layer.timeout * 2)
            summary()
    pumping.cancel()
    await layer.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
