"""The live part: one WebSocket per open room page.

Messages are saved through the ORM (on the bridge's thread, never on the event loop) and
sent to everyone in the room; the last messages are loaded from the database on join;
who-is-typing events go to the others in the room. Announcements from the Django view
arrive as broadcast frames on the "announcements" group.
"""

from __future__ import annotations

from typing import Any

from chat.models import ROOM_NAME, Message, Room

from chanlite import App, WebSocket
from chanlite.contrib.django import db

app = App()

HISTORY = 50
MAX_TEXT = 2000


@db
def open_room(name: str) -> int:
    room, _ = Room.objects.get_or_create(name=name)
    return int(room.pk)


@db
def history(room_id: int) -> list[dict[str, Any]]:
    rows = Message.objects.filter(room_id=room_id).select_related("author")
    latest = list(rows.order_by("-created")[:HISTORY])
    return [message.as_event() for message in reversed(latest)]


@db
def save(room_id: int, user_id: int, text: str) -> dict[str, Any]:
    message = Message.objects.create(room_id=room_id, author_id=user_id, text=text)
    return Message.objects.select_related("author").get(pk=message.pk).as_event()


@app.websocket("/ws/chat/{room}")
async def chat(ws: WebSocket, room: str) -> None:
    user = ws.user
    if not user.is_authenticated or not ROOM_NAME.fullmatch(room):
        await ws.close()  # before accept: the handshake is refused with 403
        return
    room_id = await open_room(room)
    group = f"chat.{room}"
    await ws.accept()
    await ws.join(group)
    await ws.join("announcements")
    await ws.send_json({"type": "history", "messages": await history(room_id)})
    async for data in ws.iter_json():
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "message":
            text = str(data.get("text", "")).strip()[:MAX_TEXT]
            if text:
                event = await save(room_id, user.pk, text)
                await ws.group_send(group, {"type": "chat.message", "message": event})
        elif kind == "typing":
            typing = bool(data.get("typing"))
            await ws.group_send(
                group, {"type": "chat.typing", "user": user.get_username(), "typing": typing}
            )
    await ws.group_send(
        group, {"type": "chat.typing", "user": user.get_username(), "typing": False}
    )


@chat.on("chat.message")
async def chat_message(ws: WebSocket, event: dict[str, Any]) -> None:
    await ws.send_json({"type": "message", **event["message"]})


@chat.on("chat.typing")
async def chat_typing(ws: WebSocket, event: dict[str, Any]) -> None:
    if event["user"] != ws.user.get_username():  # nobody needs to see their own typing
        await ws.send_json({"type": "typing", "user": event["user"], "typing": event["typing"]})
