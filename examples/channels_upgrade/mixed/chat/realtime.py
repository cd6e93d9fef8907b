"""New code, written for chanlite, beside the Channels consumers it will replace.

The room's new page talks to ``/ws/v2/chat/<room>/``; old pages keep talking to the
consumers on ``/ws/chat/<room>/``. Both are in the group ``chat_<room>`` on the one
shared layer and speak the same event, ``{"type": "chat.message", "message": ...}``, so
a line posted on either reaches both.
"""

# --8<-- [start:app]
from mysite.channels_asgi import application as channels_application

from chanlite import App
from chanlite.contrib.django import db
from chat.models import Message

# What no chanlite route takes goes to the Channels project as it was: its consumers,
# and Django for the pages.
app = App(fallback=channels_application)


@app.websocket("/ws/v2/chat/{room_name}/")
async def chat(ws, room_name):
    group = f"chat_{room_name}"  # the consumers' group name
    await ws.join(group)
    await ws.accept()
    async for data in ws.iter_json():
        await save_message(room_name, data["message"])
        await ws.group_send(group, {"type": "chat.message", "message": data["message"]})


@chat.on("chat.message")  # what ChatConsumer.chat_message() gets
async def chat_message(ws, event):
    await ws.send_json({"message": event["message"]})


@db
def save_message(room, text):
    Message.objects.create(room=room, text=text)


# --8<-- [end:app]
