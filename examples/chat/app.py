"""A group chat: rooms by URL, nicknames, join/leave notices, a typing indicator.

    chanlite run examples/chat/app.py:app --layer sqlite:///chat.db --workers 2
    open http://127.0.0.1:8000/  (the "lobby"), or /room/NAME for another room

Every frame the app writes to the page is a JSON object with a "kind":

* ``welcome`` - only to the socket that just joined: its nick, room and serving process id;
* ``joined`` / ``left`` - someone entered or left the room;
* ``message`` - a chat line: nick, text, at (Unix time);
* ``typing`` - someone is typing;
* ``notice`` - a line from the operator (see below);
* ``error`` - only to the socket that sent a frame the app does not take.

The page sends ``{"text": "..."}`` for a chat line and ``{"kind": "typing"}``. Anything
else is answered with an ``error`` frame and logged at INFO; a frame that is not JSON
closes the socket with 1007 (``ws.iter_json``); a room name that is not valid is refused
before the handshake is accepted (403), with a log line. No client input is a traceback.

Fan-out uses ``app.broadcast``: one encode per process, no Python handler per member. The
socket's group is ``room.NAME``, so other programs sharing the layer can talk to a room:

    chanlite send --layer sqlite:///chat.db room.lobby '{"type": "chat.message", "text": "hi"}'
    chanlite send --layer sqlite:///chat.db room.lobby '{"type": "chat.notice", "text": "brb"}'
    chanlite send --layer sqlite:///chat.db --broadcast-text 'plain text' room.lobby

The first two run the ``on`` handlers below (``nick`` defaults to "server"); the last
writes its text as-is to every socket, and the page shows a frame that is not the app's
JSON as a system notice.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from chanlite import App, HTMLResponse, Request, WebSocket

logger = logging.getLogger("chanlite.example.chat")
HERE = Path(__file__).parent
PAGE = HERE / "static" / "index.html"
app = App(layer=os.environ.get("CHAT_LAYER", "memory://"))
app.static("/static", str(HERE / "static"))

ROOM = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
MAX_NICK = 32
MAX_TEXT = 2000
BAD_ROOM = "room names are 1-40 letters, digits, - and _"
BAD_FRAME = 'frames are {"text": "a line"} or {"kind": "typing"}'


def group_for(room: str) -> str:
    """The layer group of a room: ``room.lobby``."""
    return f"room.{room}"


def clean_text(value: Any) -> str:
    """A message body as the app stores it: a string, stripped, at most MAX_TEXT long."""
    return str(value if value is not None else "").strip()[:MAX_TEXT]


def clean_nick(value: Any, default: str) -> str:
    """A nickname: a stripped string of at most MAX_NICK characters, never empty."""
    return str(value if value is not None else "").strip()[:MAX_NICK] or default


def page(status_code: int = 200) -> HTMLResponse:
    # Read on every request so edits to the page show on reload, with no build step.
    return HTMLResponse(PAGE.read_text(encoding="utf-8"), status_code=status_code)


@app.http("/")
async def index(request: Request) -> HTMLResponse:
    """The lobby."""
    return page()


@app.http("/room/{room}")
async def room_page(request: Request, room: str) -> HTMLResponse:
    """Any other room; the page reads the room name from its own URL."""
    # A bad name still gets the page (with a 404 status), which explains what went wrong.
    return page(200 if ROOM.match(room) else 404)


@app.websocket("/ws/{room}")
async def chat(ws: WebSocket, room: str) -> None:
    """One chat member: joins the room's group, relays their lines, says goodbye."""
    if not ROOM.match(room):
        # The page checks the name before connecting, so only another client gets here.
        logger.info("Refused a chat socket for room %r from %s: %s", room, ws.client, BAD_ROOM)
        await ws.close()  # before accept: the handshake is refused with 403
        return
    nick = clean_nick(ws.query_params.get("nick"), "anonymous")
    group = group_for(room)
    await ws.accept()
    await ws.join(group)
    # The pid shows which worker process serves this socket: with --workers 2, two tabs
    # are often served by different processes and still talk through the layer.
    await ws.send_json({"kind": "welcome", "nick": nick, "room": room, "worker": os.getpid()})
    await app.broadcast(group, json={"kind": "joined", "nick": nick, "room": room})
    try:
        async for data in ws.iter_json():
            if isinstance(data, dict) and data.get("kind") == "typing":
                await app.broadcast(group, json={"kind": "typing", "nick": nick})
                continue
            if not isinstance(data, dict) or not isinstance(data.get("text"), str):
                # Not a frame the page sends: tell this client, keep the member.
                logger.info("Refused a frame from %s in %s: %.80r", ws.client, room, data)
                await ws.send_json({"kind": "error", "text": BAD_FRAME})
                continue
            text = clean_text(data["text"])
            if text:
                await app.broadcast(
                    group,
                    json={"kind": "message", "nick": nick, "text": text, "at": time.time()},
                )
    finally:
        await app.broadcast(group, json={"kind": "left", "nick": nick, "room": room})


@chat.on("chat.message")
async def message_from_outside(ws: WebSocket, event: dict[str, Any]) -> None:
    """A chat line sent to the room's group by another program (``chanlite send``)."""
    text = clean_text(event.get("text"))
    if text:
        nick = clean_nick(event.get("nick"), "server")
        await ws.send_json({"kind": "message", "nick": nick, "text": text, "at": time.time()})


@chat.on("chat.notice")
async def notice_from_outside(ws: WebSocket, event: dict[str, Any]) -> None:
    """An operator notice, shown as a system line rather than as someone's message."""
    text = clean_text(event.get("text"))
    if text:
        await ws.send_json({"kind": "notice", "text": text})
