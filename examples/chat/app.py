"""A group chat: rooms by URL, nicknames, who is here, history, a typing indicator.

    chanlite run examples/chat/app.py:app --layer sqlite:///chat.db --workers 2
    open http://127.0.0.1:8000/  (the "lobby"), or /room/NAME for another room

The room's group ``room.NAME`` keeps its last 100 messages (``app.history``): a page that
opens late sees the last 50, and a page that reconnects (a network blip, a restart of the
server, a worker killed) sends the offset and epoch of the last message it saw and gets
exactly what it missed. Each member is *present* in the room under its nickname: the page
lists who is here, and two tabs of one nickname are one person (no second "joined").

Every frame the app writes to the page is a JSON object with a "kind":

* ``welcome`` - only to the socket that just joined: its nick, room, serving process id
  and who is in the room;
* ``joined`` / ``left`` - a nickname came into the room or left it (its last tab closed);
* ``message`` - a chat line: nick, text, at (Unix time), offset and epoch;
* ``notice`` - a line from the operator (see below), with offset and epoch;
* ``gap`` - the messages after the page's position cannot all be served (the history was
  lost or has moved past it): the last 50 follow;
* ``typing`` - someone is typing (not kept: it goes to the group ``typing.NAME``);
* ``error`` - only to the socket that sent a frame the app does not take.

The page sends ``{"text": "..."}`` for a chat line and ``{"kind": "typing"}``. Anything
else is answered with an ``error`` frame and logged at INFO; a frame that is not JSON
closes the socket with 1007 (``ws.iter_json``); a room name that is not valid is refused
before the handshake is accepted (403), a malformed position is closed with 4400, each
with a log line. No client input is a traceback.

Chat lines go through ``ws.group_send`` to the room's group (kept in its history, with an
``on`` handler per member); typing uses ``app.broadcast`` (one encode per process, no
handler per member). Other programs sharing the layer can talk to a room; declaring the
history in the layer URL keeps what they say too:

    KEEP='sqlite:///chat.db?history=room.*:100'
    chanlite send --layer "$KEEP" room.lobby '{"type": "chat.message", "text": "hi"}'
    chanlite send --layer "$KEEP" room.lobby '{"type": "chat.notice", "text": "brb"}'
    chanlite send --layer sqlite:///chat.db --broadcast-text 'plain text' room.lobby

The first two run the ``on`` handlers below (``nick`` defaults to "server"); the last
writes its text as-is to every socket, and the page shows a frame that is not the app's
JSON as a system notice (such a frame carries no position: a page does not resume past it).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from chanlite import App, HistoryError, HTMLResponse, Request, StreamPosition, WebSocket

logger = logging.getLogger("chanlite.example.chat")
HERE = Path(__file__).parent
PAGE = HERE / "static" / "index.html"
app = App(layer=os.environ.get("CHAT_LAYER", "memory://"))
app.static("/static", str(HERE / "static"))
app.history("room.*", size=100)

ROOM = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
MAX_NICK = 32
MAX_TEXT = 2000
REPLAY = 50  # messages a page that opens late (or missed too much) is shown
BAD_ROOM = "room names are 1-40 letters, digits, - and _"
BAD_FRAME = 'frames are {"text": "a line"} or {"kind": "typing"}'


def group_for(room: str) -> str:
    """The layer group of a room: ``room.lobby`` (its messages and who is present)."""
    return f"room.{room}"


def typing_group_for(room: str) -> str:
    """The group of a room's typing notices, which are not worth keeping: ``typing.lobby``."""
    return f"typing.{room}"


def position_from(query: Any) -> StreamPosition | None:
    """The page's last position (``?offset=N&epoch=E``), or None; ValueError if malformed."""
    if "offset" not in query and "epoch" not in query:
        return None
    return StreamPosition(int(query.get("offset", "")), str(query.get("epoch", "")))


def stream_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The position of a kept message, for the page to resume from (none if not kept)."""
    if "offset" not in event:
        return {}
    return {"offset": event["offset"], "epoch": event["epoch"]}


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
    try:
        since = position_from(ws.query_params)
    except ValueError:
        logger.info("Refused a chat socket from %s: malformed position %s", ws.client, ws.url)
        await ws.close(4400, "malformed offset/epoch")
        return
    await ws.accept()
    # The pid shows which worker process serves this socket: with --workers 2, two tabs
    # are often served by different processes and still talk through the layer.
    people = sorted(await app.presence(group))
    await ws.send_json(
        {"kind": "welcome", "nick": nick, "room": room, "worker": os.getpid(), "people": people}
    )
    try:
        # After the welcome, in order: what the page missed (or the last REPLAY messages
        # for a new page), then live messages; and this nick's arrival, if it is new.
        await ws.join(group, since, last=REPLAY, presence=(nick, {"nick": nick}))
    except HistoryError as exc:
        logger.info("Refused a chat socket from %s in %s: %s", ws.client, room, exc)
        await ws.close(4400, "bad position")
        return
    await ws.join(typing_group_for(room))
    async for data in ws.iter_json():
        if isinstance(data, dict) and data.get("kind") == "typing":
            await app.broadcast(typing_group_for(room), json={"kind": "typing", "nick": nick})
            continue
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            # Not a frame the page sends: tell this client, keep the member.
            logger.info("Refused a frame from %s in %s: %.80r", ws.client, room, data)
            await ws.send_json({"kind": "error", "text": BAD_FRAME})
            continue
        text = clean_text(data["text"])
        if text:
            await ws.group_send(
                group, {"type": "chat.message", "nick": nick, "text": text, "at": time.time()}
            )


@chat.on("chat.message")
async def chat_message(ws: WebSocket, event: dict[str, Any]) -> None:
    """A chat line: from a member, or sent to the room's group by another program."""
    text = clean_text(event.get("text"))
    if text:
        nick = clean_nick(event.get("nick"), "server")
        at = event.get("at") if isinstance(event.get("at"), (int, float)) else time.time()
        await ws.send_json(
            {"kind": "message", "nick": nick, "text": text, "at": at, **stream_fields(event)}
        )


@chat.on("chat.notice")
async def notice_from_outside(ws: WebSocket, event: dict[str, Any]) -> None:
    """An operator notice, shown as a system line rather than as someone's message."""
    text = clean_text(event.get("text"))
    if text:
        await ws.send_json({"kind": "notice", "text": text, **stream_fields(event)})


@chat.on("history.gap")
async def gap(ws: WebSocket, event: dict[str, Any]) -> None:
    """The page's position cannot be resumed exactly: say so (the last messages follow)."""
    await ws.send_json({"kind": "gap", "reason": event["reason"], **stream_fields(event)})


@chat.on("presence.join")
async def someone_joined(ws: WebSocket, event: dict[str, Any]) -> None:
    """A nickname's first tab came into the room."""
    room = event["group"].removeprefix("room.")
    await ws.send_json({"kind": "joined", "nick": event["key"], "room": room})


@chat.on("presence.leave")
async def someone_left(ws: WebSocket, event: dict[str, Any]) -> None:
    """A nickname's last tab left the room (or its process died)."""
    room = event["group"].removeprefix("room.")
    await ws.send_json({"kind": "left", "nick": event["key"], "room": room})
