"""Django Channels consumer tests the way Channels runs its own: a new event loop per test.

``python channels_loops.py URL PREFIX`` configures a minimal Django whose channel layer is
chanlite's Redis layer, then runs three consumer tests, each under its own
``asyncio.run()`` and none closing the layer (as with pytest-asyncio's loop per test and
Channels' global layer), printing ``OK`` after each. A loop that cannot shut down hangs
here, and the test driving this script fails on its timeout.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import django
from django.conf import settings

ROUNDS = 10


def configure(url: str, prefix: str) -> None:
    settings.configure(
        DEBUG=False,
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "chanlite_redis.RedisLayer",
                "CONFIG": {"hosts": [url], "prefix": prefix, "heartbeat": 0.05},
            }
        },
    )
    django.setup()


async def test_connect_and_leave_at_once() -> None:
    # The loop ends while the layer's first heartbeat may still be talking to Redis.
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.testing import WebsocketCommunicator

    communicator = WebsocketCommunicator(AsyncWebsocketConsumer.as_asgi(), "/testws/")
    assert (await communicator.connect(timeout=10))[0]
    await communicator.disconnect()


async def test_async_consumer_groups() -> None:
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator

    class Consumer(AsyncWebsocketConsumer):  # type: ignore[misc]
        groups = ["chat"]

        async def receive(self, text_data: Any = None, bytes_data: Any = None) -> None:
            await self.send(text_data=text_data)

    communicator = WebsocketCommunicator(Consumer.as_asgi(), "/testws/")
    assert (await communicator.connect(timeout=10))[0]
    await get_channel_layer().group_send("chat", {"type": "websocket.receive", "text": "hi"})
    assert await communicator.receive_from(timeout=5) == "hi"
    await communicator.disconnect()


async def test_sync_consumer_groups() -> None:
    from channels.generic.websocket import WebsocketConsumer
    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator

    class Consumer(WebsocketConsumer):  # type: ignore[misc]
        groups = ["chat"]

        def receive(self, text_data: Any = None, bytes_data: Any = None) -> None:
            self.send(text_data=text_data)

    communicator = WebsocketCommunicator(Consumer.as_asgi(), "/testws/")
    assert (await communicator.connect(timeout=10))[0]
    await get_channel_layer().group_send("chat", {"type": "websocket.receive", "text": "yo"})
    assert await communicator.receive_from(timeout=5) == "yo"
    await communicator.disconnect()


async def test_json_chat_between_two_sockets() -> None:
    from channels.generic.websocket import AsyncJsonWebsocketConsumer
    from channels.testing import WebsocketCommunicator

    class Chat(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
        async def connect(self) -> None:
            await self.channel_layer.group_add("lobby", self.channel_name)
            await self.accept()

        async def disconnect(self, code: int) -> None:
            await self.channel_layer.group_discard("lobby", self.channel_name)

        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            await self.channel_layer.group_send("lobby", {"type": "chat.message", **content})

        async def chat_message(self, event: dict[str, Any]) -> None:
            await self.send_json({"text": event["text"]})

    one = WebsocketCommunicator(Chat.as_asgi(), "/ws/")
    two = WebsocketCommunicator(Chat.as_asgi(), "/ws/")
    assert (await one.connect(timeout=10))[0]
    assert (await two.connect(timeout=10))[0]
    await one.send_json_to({"text": "hello"})
    assert await one.receive_json_from(timeout=5) == {"text": "hello"}
    assert await two.receive_json_from(timeout=5) == {"text": "hello"}
    await one.disconnect()
    await two.disconnect()


if __name__ == "__main__":
    configure(sys.argv[1], sys.argv[2])
    tests = (
        test_connect_and_leave_at_once,
        test_async_consumer_groups,
        test_sync_consumer_groups,
        test_json_chat_between_two_sockets,
    )
    for test in tests:
        for _ in range(ROUNDS):
            asyncio.run(test())
        print("OK", flush=True)
