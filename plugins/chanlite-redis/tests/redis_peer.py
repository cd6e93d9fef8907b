"""A stand-in for one chanlite process on a shared Redis, driven over stdin/stdout.

Run as ``python redis_peer.py URL PREFIX``. It makes two local channels, joins both to the
group ``room`` and prints ``{"event": "ready", "channels": [...], "client_id": ...}``.
Then it prints every ``receive_local()`` item as ``{"event": "received", ...}`` and obeys
JSON commands on stdin: ``{"op": "group_send"|"send"|"group_add", ...}``, ``{"op": "quit"}``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from chanlite_redis import RedisLayer
from peer_process import emit, obey


async def main(url: str, prefix: str) -> None:
    layer = RedisLayer(url, prefix=prefix, heartbeat=0.2)
    channels = [await layer.new_channel(), await layer.new_channel()]
    for channel in channels:
        await layer.group_add("room", channel)

    async def pump() -> None:
        while True:
            members, message = await layer.receive_local()
            emit(event="received", channels=sorted(members), message=message)

    async def run(command: dict[str, Any]) -> None:
        op = command["op"]
        if op == "group_send":
            await layer.group_send(command["group"], command["message"])
        elif op == "send":
            await layer.send(command["channel"], command["message"])
        elif op == "group_add":
            await layer.group_add(command["group"], command["channel"])

    pumping = asyncio.ensure_future(pump())
    await asyncio.sleep(0)  # start the inbox reader and heartbeat before saying ready
    emit(event="ready", channels=channels, client_id=layer.client_id)
    await obey(run)
    pumping.cancel()
    await layer.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
