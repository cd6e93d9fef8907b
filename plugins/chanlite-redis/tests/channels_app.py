"""A Django Channels chat consumer on chanlite's Redis layer, run in its own process.

``python channels_app.py URL PREFIX`` configures a minimal Django (so it cannot clash
with other Django tests), connects two WebsocketCommunicators, broadcasts through the
group from one and checks both get it, then prints ``OK``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import django
from django.conf import settings


def configure(url: str, prefix: str) -> None:
    settings.configure(
        DEBUG=False,
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "chanlite_redis.RedisLayer",
                "CONFIG": {"hosts": [url], "prefix": prefix, "capacity": 50},
            }
        },
    )
    django.setup()


async def main() -> None:
    from channels.generic.websocket import AsyncJsonWebsocketConsumer
    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator

    class Chat(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
        async def connect(self) -> None:
            await self.channel_layer.group_add("lobby", self.channel_name)
            await self.accept()

        async def disconnect(self, code: int) -> None:
            await self.channel_layer.group_discard("lobby", self.channel_name)

        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            await self.channel_layer.group_send(
                "lobby", {"type": "chat.message", "text": content["text"]}
            )

        async def chat_message(self, event: dict[str, Any]) -> None:
            await self.send_json({"text": event["text"]})

    app = Chat.as_asgi()
    one = WebsocketCommunicator(app, "/ws/")
    two = WebsocketCommunicator(app, "/ws/")
    assert (await one.connect(timeout=10))[0]
    assert (await two.connect(timeout=10))[0]
    await one.send_json_to({"text": "hello lobby"})
    assert await one.receive_json_from(timeout=5) == {"text": "hello lobby"}
    assert await two.receive_json_from(timeout=5) == {"text": "hello lobby"}
    # A plain channel name, as a Channels worker would use, works alongside.
    layer = get_channel_layer()
    await layer.send("worker-jobs", {"type": "job", "n": 7})
    assert (await asyncio.wait_for(layer.receive("worker-jobs"), 5))["n"] == 7
    await one.disconnect()
    await two.send_json_to({"text": "after one left"})
    assert await two.receive_json_from(timeout=5) == {"text": "after one left"}
    assert await one.receive_nothing(timeout=0.3)
    await two.disconnect()
    await layer.close()
    print("OK", flush=True)


if __name__ == "__main__":
    configure(sys.argv[1], sys.argv[2])
    asyncio.run(main())
