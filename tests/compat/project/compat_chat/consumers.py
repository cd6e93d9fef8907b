"""The Channels tutorial's chat consumer in its async and sync forms, a JSON one and an
HTTP one. Each also answers ``{"whoami": true}`` with its ``channel_name``, so the tests
can send to exactly one consumer."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import (
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)


class ChatConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code: int) -> None:
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        data = json.loads(text_data or "{}")
        if data.get("whoami"):
            await self.send(text_data=json.dumps({"channel": self.channel_name}))
            return
        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat.message", "message": data["message"]}
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"message": event["message"]}))


class SyncChatConsumer(WebsocketConsumer):  # type: ignore[misc]
    """The tutorial's first, synchronous version: every layer call through async_to_sync."""

    def connect(self) -> None:
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        async_to_sync(self.channel_layer.group_add)(self.room_group_name, self.channel_name)
        self.accept()

    def disconnect(self, close_code: int) -> None:
        async_to_sync(self.channel_layer.group_discard)(self.room_group_name, self.channel_name)

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        data = json.loads(text_data or "{}")
        if data.get("whoami"):
            self.send(text_data=json.dumps({"channel": self.channel_name}))
            return
        async_to_sync(self.channel_layer.group_send)(
            self.room_group_name, {"type": "chat.message", "message": data["message"]}
        )

    def chat_message(self, event: dict[str, Any]) -> None:
        self.send(text_data=json.dumps({"message": event["message"]}))


class JsonChatConsumer(JsonWebsocketConsumer):  # type: ignore[misc]
    groups = ["json_chat"]  # joined and left by Channels itself

    def connect(self) -> None:
        self.accept()

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content.get("whoami"):
            self.send_json({"channel": self.channel_name})
            return
        async_to_sync(self.channel_layer.group_send)(
            "json_chat", {"type": "chat.message", "message": content["message"]}
        )

    def chat_message(self, event: dict[str, Any]) -> None:
        self.send_json({"message": event["message"]})


class NotifyConsumer(AsyncHttpConsumer):  # type: ignore[misc]
    """``POST /notify/<room>/`` posts the body to the room (or, with ``?channel=``, to one
    consumer) and answers 202."""

    async def handle(self, body: bytes) -> None:
        room = self.scope["url_route"]["kwargs"]["room_name"]
        event = {"type": "chat.message", "message": body.decode()}
        channel = parse_qs(self.scope["query_string"].decode()).get("channel")
        if channel:
            await self.channel_layer.send(channel[0], event)
        else:
            await self.channel_layer.group_send(f"chat_{room}", event)
        await self.send_response(202, b"sent", headers=[(b"content-type", b"text/plain")])
