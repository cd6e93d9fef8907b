"""Django Channels peer for bench/topics.py: the Phoenix frames a topic subscriber gets,
from a consumer a Channels user would write (``group_send`` + a handler per member).

``BENCH_CHANNEL_LAYER`` is a ``redis://`` URL (channels_redis) or unset (in-memory).
"""

from __future__ import annotations

import json
import os
from typing import Any

import django
from django.conf import settings

_url = os.environ.get("BENCH_CHANNEL_LAYER", "")
_layer: dict[str, Any] = (
    {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [_url]}}
    if _url.startswith("redis")
    else {"BACKEND": "channels.layers.InMemoryChannelLayer"}
)
settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-only",
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={"default": {**_layer}},
)
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


def _group(topic: str) -> str:
    return "phx." + topic.replace(":", "_")


class PhoenixSocket(AsyncWebsocketConsumer):
    """Joins, replies and broadcasts of the Phoenix protocol, the Channels way."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        join_ref, ref, topic, event, payload = json.loads(text_data or "")
        if event == "phx_join":
            await self.channel_layer.group_add(_group(topic), self.channel_name)
            reply = {"status": "ok", "response": {}}
            await self.send(text_data=json.dumps([join_ref, ref, topic, "phx_reply", reply]))
        elif event == "pub":
            text = json.dumps([None, None, topic, "msg", payload], separators=(",", ":"))
            await self.channel_layer.group_send(_group(topic), {"type": "phx.msg", "text": text})

    async def phx_msg(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter(
    {"websocket": URLRouter([path("socket/websocket", PhoenixSocket.as_asgi())])}
)
