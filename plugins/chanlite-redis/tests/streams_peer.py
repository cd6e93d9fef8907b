"""One chanlite process with history and presence on a shared Redis, driven over stdio.

Run as ``python streams_peer.py URL PREFIX PRESENCE_TIMEOUT``. It keeps history for
``h.*`` groups (size 1000), makes one local channel and prints
``{"event": "ready", "channel": ..., "client_id": ...}``; then it prints every message
its channel receives as ``{"event": "received", "message": ...}`` and obeys JSON commands
on stdin, answering each with ``{"event": "done", "op": ...}``:

* ``{"op": "group_add", "group": g}`` -- its channel joins *g*;
* ``{"op": "presence_join", "group": g, "key": k, "meta": {...}}``;
* ``{"op": "send_many", "group": g, "count": n, "tag": t}`` -- n group_sends, no pause;
* ``{"op": "quit"}``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from chanlite_redis import RedisLayer
from peer_process import emit, obey

from chanlite.layers import HistoryPolicy


async def main(url: str, prefix: str, presence_timeout: float) -> None:
    layer = RedisLayer(
        url,
        prefix=prefix,
        heartbeat=0.2,
        presence_timeout=presence_timeout,
        history={"h.*": HistoryPolicy(1000)},
    )
    channel = await layer.new_channel()

    async def pump() -> None:
        while True:
            message = await layer.receive(channel)
            emit(event="received", message=message)

    async def run(command: dict[str, Any]) -> None:
        op = command["op"]
        if op == "group_add":
            await layer.group_add(command["group"], channel)
        elif op == "presence_join":
            await layer.presence_join(command["group"], channel, command["key"], command["meta"])
        elif op == "send_many":
            for i in range(command["count"]):
                await layer.group_send(
                    command["group"], {"type": "peer.message", "tag": command["tag"], "i": i}
                )

    pumping = asyncio.ensure_future(pump())
    await asyncio.sleep(0)
    emit(event="ready", channel=channel, client_id=layer.client_id)
    await obey(run)
    pumping.cancel()
    await layer.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
