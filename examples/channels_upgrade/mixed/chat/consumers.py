"""The chat's consumers, as they were (see ../before), kept while new code is chanlite's.

One change: the chat consumers take chanlite's broadcasts (chanlite.contrib.channels), as
they now share their groups with chanlite sockets."""

import json

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import (
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)

from chanlite.contrib.channels import AsyncBroadcastMixin, BroadcastMixin
from chat.models import Message


# The mixins: chanlite's broadcasts to the group reach these consumers' clients too.
class ChatConsumer(AsyncBroadcastMixin, AsyncWebsocketConsumer):
    async def connect(self):
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code):
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data):
        message = json.loads(text_data)["message"]
        await save_message(self.room_name, message)
        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    async def chat_message(self, event):
        await self.send(text_data=json.dumps({"message": event["message"]}))


@database_sync_to_async
def save_message(room, text):
    Message.objects.create(room=room, text=text)


class SyncChatConsumer(BroadcastMixin, WebsocketConsumer):
    def connect(self):
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        async_to_sync(self.channel_layer.group_add)(self.room_group_name, self.channel_name)
        self.accept()

    def disconnect(self, close_code):
        async_to_sync(self.channel_layer.group_discard)(self.room_group_name, self.channel_name)

    def receive(self, text_data):
        message = json.loads(text_data)["message"]
        Message.objects.create(room=self.room_name, text=message)
        async_to_sync(self.channel_layer.group_send)(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    def chat_message(self, event):
        self.send(text_data=json.dumps({"message": event["message"]}))


class AnnouncementsConsumer(JsonWebsocketConsumer):
    groups = ["announcements"]  # joined on connect and left on disconnect by Channels

    def receive_json(self, content):
        if not self.scope["user"].is_authenticated:
            self.send_json({"error": "log in to announce"})
            return
        async_to_sync(self.channel_layer.group_send)(
            "announcements", {"type": "announce", "text": content["text"]}
        )

    def announce(self, event):
        self.send_json({"announcement": event["text"]})


class RecentMessagesConsumer(AsyncHttpConsumer):
    async def handle(self, body):
        room = self.scope["url_route"]["kwargs"]["room_name"]
        messages = await recent_messages(room)
        await self.send_response(
            200,
            json.dumps(messages).encode(),
            headers=[(b"Content-Type", b"application/json")],
        )


@database_sync_to_async
def recent_messages(room, limit=20):
    rows = Message.objects.filter(room=room).order_by("-id")[:limit]
    return [row.as_dict() for row in reversed(rows)]
