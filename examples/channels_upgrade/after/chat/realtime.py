"""The chat's handlers: each consumer of the Channels version, ported to chanlite."""

import re

from chanlite import App
from chanlite.contrib.django import db
from chat.models import Message

app = App()  # the layer comes from settings.CHANLITE["LAYER"]

ROOM_NAME = re.compile(r"\w+")


# --8<-- [start:async]
@app.websocket("/ws/chat/{room_name}/")
async def chat(ws, room_name):
    if not ROOM_NAME.fullmatch(room_name):  # what re_path(r"(?P<room_name>\w+)") checked
        await ws.close()  # before accept: the handshake is refused (403)
        return
    group = f"chat_{room_name}"
    await ws.join(group)  # left on its own when the socket ends
    await ws.accept()
    async for data in ws.iter_json():
        await save_message(room_name, data["message"])
        await ws.group_send(group, {"type": "chat.message", "message": data["message"]})


@chat.on("chat.message")
async def chat_message(ws, event):
    await ws.send_json({"message": event["message"]})


@db
def save_message(room, text):
    Message.objects.create(room=room, text=text)


# --8<-- [end:async]


# --8<-- [start:sync]
# Handlers are async; the blocking part (save_message, above) runs on the bridge's thread.
# So the synchronous consumer's path is served by the same handler:
app.add_websocket_route("/ws/sync-chat/{room_name}/", chat)
# --8<-- [end:sync]


# --8<-- [start:json]
@app.websocket("/ws/announcements/")
async def announcements(ws):
    await ws.join("announcements")
    await ws.accept()
    async for content in ws.iter_json():
        if not ws.user.is_authenticated:
            await ws.send_json({"error": "log in to announce"})
            continue
        await ws.group_send("announcements", {"type": "announce", "text": content["text"]})


@announcements.on("announce")
async def announce(ws, event):
    await ws.send_json({"announcement": event["text"]})


# --8<-- [end:json]


# --8<-- [start:http]
@app.http("/chat/{room_name}/recent/")
async def recent(request, room_name):
    return await recent_messages(room_name)  # a list or dict is sent as JSON


@db
def recent_messages(room, limit=20):
    rows = Message.objects.filter(room=room).order_by("-id")[:limit]
    return [row.as_dict() for row in reversed(rows)]


# --8<-- [end:http]
