"""An app for the history/presence tests: rooms joined from a position, with presence.

Served in-process by the tests, or by ``chanlite run tests/streams_app.py:app`` with
``STREAMS_LAYER`` naming the layer (the cross-process race test).

``/room/NAME?offset=N&epoch=E`` joins ``room.NAME`` after that position; ``last=N``
replays the newest N; ``key=K`` announces presence as K. Every frame written is JSON:
``{"joined": [offset, epoch]}``, ``{"error": ..., "detail": ...}``, ``{"msg": ...}`` for
each message (with its offset/epoch), ``{"gap": ...}``, ``{"presence.join": key}``...
"""

from __future__ import annotations

import os
from typing import Any

from chanlite import App, HistoryError, NotSupported, PresenceError, StreamPosition, WebSocket

app = App(layer=os.environ.get("STREAMS_LAYER", "memory://"))
app.history("room.*", size=int(os.environ.get("STREAMS_SIZE", "1000")))


@app.websocket("/room/{name}")
async def room(ws: WebSocket, name: str) -> None:
    query = ws.query_params
    group = f"room.{name}"
    since = None
    if "offset" in query:
        since = StreamPosition(int(query["offset"]), query.get("epoch", ""))
    last = int(query["last"]) if "last" in query else None
    presence = (query["key"], {"nick": query["key"]}) if "key" in query else None
    await ws.accept()
    try:
        position = await ws.join(group, since, last=last, presence=presence)
    except (HistoryError, PresenceError, NotSupported) as exc:
        await ws.send_json({"error": type(exc).__name__, "detail": str(exc)})
        return
    joined = [position.offset, position.epoch] if position is not None else None
    await ws.send_json({"joined": joined})
    async for data in ws.iter_json():
        if "say" in data:
            await ws.group_send(group, {"type": "chat.line", "text": data["say"]})
        elif "presence" in data:
            await ws.send_json({"presence": await ws.app.presence(group)})
        elif "leave" in data:
            await ws.leave(group)
            await ws.send_json({"left": group})


def _message(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "msg": event.get("text", event.get("i")),
        "tag": event.get("tag"),
        "offset": event.get("offset"),
        "epoch": event.get("epoch"),
        "group": event.get("group"),
    }


@room.on("chat.line")
async def chat_line(ws: WebSocket, event: dict[str, Any]) -> None:
    await ws.send_json(_message(event))


@room.on("peer.msg")
async def peer_msg(ws: WebSocket, event: dict[str, Any]) -> None:
    await ws.send_json(_message(event))


@room.on("history.gap")
async def gap(ws: WebSocket, event: dict[str, Any]) -> None:
    await ws.send_json({"gap": event["reason"], "offset": event["offset"], "epoch": event["epoch"]})


@room.on("presence.join")
async def presence_join(ws: WebSocket, event: dict[str, Any]) -> None:
    await ws.send_json({"presence.join": event["key"], "meta": event["meta"]})


@room.on("presence.leave")
async def presence_leave(ws: WebSocket, event: dict[str, Any]) -> None:
    await ws.send_json({"presence.leave": event["key"]})
