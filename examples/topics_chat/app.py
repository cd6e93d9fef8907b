"""A chat on topics, spoken with the official ``phoenix`` JavaScript client in the page.

    (cd examples/topics_chat && npm ci)      # the phoenix package the page loads
    chanlite run examples/topics_chat/app.py:app --layer sqlite:///topics.db
    open http://127.0.0.1:8000/?room=lobby&nick=ada

One socket endpoint (``/socket``: WebSocket, and long-poll when WebSockets are blocked;
phoenix.js falls back by itself) and one topic pattern, ``room:{name}``. A room keeps its
last 100 messages: a latecomer sees the last 50, and a page that reconnects (a network
blip, a server restart) rejoins from the ref of the last message it saw and gets exactly
what it missed, or is told it cannot. ``new Presence(channel)`` lists who is in the room,
across every process sharing the layer.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from chanlite import App, HTMLResponse, PlainTextResponse, Request, Response
from chanlite.responses import FileResponse
from chanlite.topics import Channel, Connection, Refused

HERE = Path(__file__).parent
PHOENIX_JS = HERE / "node_modules" / "phoenix" / "priv" / "static" / "phoenix.min.js"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

app = App(layer=os.environ.get("CHAT_LAYER", "memory://"))
app.static("/static", str(HERE / "static"))


async def connect(connection: Connection, params: dict[str, str]) -> bool:
    """Who is this? A nickname from the socket params (a real app checks a token here)."""
    nick = params.get("nick", "")
    if not NAME.match(nick):
        return False
    connection.assigns["nick"] = nick
    return True


socket = app.socket("/socket", connect=connect)
room = socket.topic("room:{name}", history=100, presence=True)


@room.join
async def join(channel: Channel, name: str, params: dict[str, Any]) -> dict[str, Any]:
    if not NAME.match(name):
        raise Refused("bad room name")
    await channel.track(channel.assigns["nick"], {"since": int(time.time())})
    return {"nick": channel.assigns["nick"], "worker": os.getpid()}


@room.on("say")
async def say(channel: Channel, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    text = payload.get("text") if isinstance(payload, dict) else None
    if not isinstance(text, str) or not text.strip() or len(text) > 2000:
        raise Refused("a message is a non-empty text of at most 2000 characters")
    message = {"nick": channel.assigns["nick"], "text": text.strip(), "at": time.time()}
    await channel.broadcast("message", message)
    return {}


@app.http("/")
async def index(request: Request) -> Response:
    return HTMLResponse((HERE / "static" / "index.html").read_text())


@app.http("/vendor/phoenix.min.js")
async def phoenix_js(request: Request) -> Response:
    if not PHOENIX_JS.exists():
        return PlainTextResponse(
            "phoenix.js is not installed: run `npm ci` in examples/topics_chat", 500
        )
    return FileResponse(str(PHOENIX_JS), media_type="text/javascript")
