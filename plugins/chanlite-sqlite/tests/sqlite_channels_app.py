"""A Django Channels app on the SQLite layer, run in its own process by the tests.

``python sqlite_channels_app.py DB_PATH`` configures Django with
``CHANNEL_LAYERS = {"default": {"BACKEND": "chanlite_sqlite.SQLiteLayer", ...}}``, connects
two WebSocket clients to an ``AsyncWebsocketConsumer`` through Channels'
``WebsocketCommunicator`` and checks that:

1. a message from one client is group-broadcast to both;
2. a group message sent by *another OS process* reaches both (the parent test sends it
   after this script prints ``ready``, then writes a line to our stdin);
3. ``async_to_sync(channel_layer.group_send)`` from a thread with no event loop (a sync
   view) reaches both.

Prints ``ok`` and exits 0 when all hold; any failure is an exception and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import sys
import threading

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "chanlite_sqlite.SQLiteLayer",
                "CONFIG": {"path": sys.argv[1], "capacity": 50, "expiry": 30},
            }
        },
    )
    django.setup()

from asgiref.sync import async_to_sync
from chanlite_sqlite import SQLiteLayer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add("chat", self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard("chat", self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send("chat", {"type": "chat.message", "text": text_data})

    async def chat_message(self, event: dict[str, str]) -> None:
        await self.send(text_data=event["text"])


async def main() -> None:
    layer = get_channel_layer()
    assert isinstance(layer, SQLiteLayer), layer
    application = ChatConsumer.as_asgi()
    alice = WebsocketCommunicator(application, "/ws/chat/")
    bob = WebsocketCommunicator(application, "/ws/chat/")
    assert (await alice.connect())[0]
    assert (await bob.connect())[0]

    await alice.send_to(text_data="hello from alice")
    for client in (alice, bob):
        assert await client.receive_from(timeout=5) == "hello from alice"

    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for client in (alice, bob):
        assert await client.receive_from(timeout=5) == "from another process"

    def sync_view() -> None:
        async_to_sync(layer.group_send)("chat", {"type": "chat.message", "text": "from a view"})

    thread = threading.Thread(target=sync_view)
    thread.start()
    await asyncio.to_thread(thread.join)
    for client in (alice, bob):
        assert await client.receive_from(timeout=5) == "from a view"

    await alice.disconnect()
    await bob.disconnect()
    await layer.close()
    print("ok", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
