"""A group chat: rooms by URL, nicknames, join/leave notices, a typing indicator.

    chanlite run examples/chat/app.py:app --layer sqlite:///chat.db --workers 2
    open http://127.0.0.1:8000/  (or /room/NAME)

Every frame the page receives is a JSON object with a "kind": "message", "joined",
"left" or "typing". Fan-out uses ``app.broadcast``: one encode, no handler per member.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from chanlite import App, HTMLResponse, Request, WebSocket

HERE = Path(__file__).parent
app = App(layer=os.environ.get("CHAT_LAYER", "memory://"))
app.static("/static", str(HERE / "static"), html=False)

ROOM = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
MAX_TEXT = 2000


def group_for(room: str) -> str:
    return f"room.{room}"


@app.http("/")
async def index(request: Request) -> HTMLResponse:
    return HTMLResponse((HERE / "static" / "index.html").read_text())


@app.http("/room/{room}")
async def room_page(request: Request, room: str) -> HTMLResponse:
    return HTMLResponse((HERE / "static" / "index.html").read_text())


@app.websocket("/ws/{room}")
async def chat(ws: WebSocket, room: str) -> None:
    if not ROOM.match(room):
        # Accept first so the page is told why (a refused handshake carries no reason).
        await ws.accept()
        await ws.close(4400, "room names are letters, digits, - and _")
        return
    nick = (ws.query_params.get("nick") or "anonymous").strip()[:32] or "anonymous"
    group = group_for(room)
    await ws.accept()
    await ws.join(group)
    await app.broadcast(group, json={"kind": "joined", "nick": nick, "room": room})
    try:
        async for data in ws.iter_json():
            if not isinstance(data, dict):
                continue
            if data.get("kind") == "typing":
                await app.broadcast(group, json={"kind": "typing", "nick": nick})
                continue
            text = str(data.get("text", "")).strip()[:MAX_TEXT]
            if text:
                await app.broadcast(
                    group,
                    json={"kind": "message", "nick": nick, "text": text, "at": time.time()},
                )
    finally:
        await app.broadcast(group, json={"kind": "left", "nick": nick, "room": room})
