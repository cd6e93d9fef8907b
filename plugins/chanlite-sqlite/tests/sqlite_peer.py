"""A layer process for the cross-process tests, driven by JSON lines on stdin.

``python sqlite_peer.py DB_PATH '{"heartbeat": 0.2, ...}'`` opens an SQLiteLayer on DB_PATH
and answers one JSON command per line (``{"id": 1, "op": "group_add", ...}``) with
``{"id": 1, "ok": true, ...}``. Everything ``receive_local`` yields is printed as
``{"event": "local", "channels": [...], "message": {...}}``.

Ops: ``info``, ``new_channel``, ``group_add``, ``group_discard``, ``group_send``, ``send``,
``receive`` (a plain channel), ``sync_send``, ``sync_group_send``, ``burst`` (concurrent
group_sends, printing ``{"event": "sent", "i": i}`` as each one returns), ``history``,
``presence_join``, ``presence_leave`` and ``presence``. The ``history`` option is given in
the URL form (``"room.*:100:600"``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from chanlite_sqlite import SQLiteLayer

from chanlite.layers import StreamPosition, parse_history_option

BACKGROUND: set[asyncio.Future[None]] = set()


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def pump(layer: SQLiteLayer) -> None:
    while True:
        channels, message = await layer.receive_local()
        emit({"event": "local", "channels": sorted(channels), "message": message})


async def burst(layer: SQLiteLayer, group: str, count: int, window: int) -> None:
    numbers = iter(range(count))

    async def worker() -> None:
        for i in numbers:
            await layer.group_send(group, {"type": "burst", "i": i, "pad": "x" * 200})
            emit({"event": "sent", "i": i})

    await asyncio.gather(*(worker() for _ in range(window)))


async def handle(layer: SQLiteLayer, command: dict[str, Any]) -> dict[str, Any]:
    op = command["op"]
    if op == "info":
        return {"client_id": layer.client_id}
    if op == "new_channel":
        return {"channel": await layer.new_channel(command.get("prefix", "specific"))}
    if op == "group_add":
        await layer.group_add(command["group"], command["channel"])
    elif op == "group_discard":
        await layer.group_discard(command["group"], command["channel"])
    elif op == "group_send":
        await layer.group_send(command["group"], command["message"])
    elif op == "send":
        await layer.send(command["channel"], command["message"])
    elif op == "receive":
        return {"message": await layer.receive(command["channel"])}
    elif op == "sync_send":
        await asyncio.to_thread(layer.send_blocking, command["channel"], command["message"])
    elif op == "sync_group_send":
        await asyncio.to_thread(layer.group_send_blocking, command["group"], command["message"])
    elif op == "burst":
        task = asyncio.ensure_future(
            burst(layer, command["group"], command["count"], command["window"])
        )
        BACKGROUND.add(task)
    elif op == "drops":
        return {"drops": dict(layer.drops)}
    elif op == "history":
        since = command.get("since")
        page = await layer.history(
            command["group"], StreamPosition(*since) if since else None, command.get("limit")
        )
        return {"events": page.events, "position": [page.position.offset, page.position.epoch]}
    elif op == "presence_join":
        await layer.presence_join(
            command["group"], command["channel"], command["key"], command["meta"]
        )
    elif op == "presence_leave":
        await layer.presence_leave(command["group"], command["channel"])
    elif op == "presence":
        return {"presence": await layer.presence(command["group"])}
    else:
        raise ValueError(f"unknown op {op!r}")
    return {}


async def main() -> None:
    options = json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    if "history" in options:
        options["history"] = parse_history_option(options["history"])
    layer = SQLiteLayer(sys.argv[1], **options)
    await layer.group_discard("warm-up", "nobody")  # opens the file and registers
    reader = asyncio.ensure_future(pump(layer))
    loop = asyncio.get_running_loop()
    stream = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), sys.stdin)
    emit({"event": "ready", "client_id": layer.client_id})
    tasks = set()

    async def run(command: dict[str, Any]) -> None:
        try:
            reply = await handle(layer, command)
            emit({"id": command["id"], "ok": True, **reply})
        except Exception as exc:
            emit({"id": command["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"})

    while line := await stream.readline():
        task = asyncio.ensure_future(run(json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    reader.cancel()
    await layer.close()


if __name__ == "__main__":
    asyncio.run(main())
