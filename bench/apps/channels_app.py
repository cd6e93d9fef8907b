"""Django Channels peer: consumers and a group, served by Daphne or uvicorn.

``BENCH_CHANNEL_LAYER`` picks the layer: unset for InMemoryChannelLayer, a ``redis://`` URL
for channels_redis (``BENCH_CHANNELS_REDIS=pubsub`` for its pub/sub layer).
"""

from __future__ import annotations

import os
from typing import Any

import django
from django.conf import settings

_layer_url = os.environ.get("BENCH_CHANNEL_LAYER", "")
if _layer_url.startswith("redis"):
    _backend = (
        "channels_redis.pubsub.RedisPubSubChannelLayer"
        if os.environ.get("BENCH_CHANNELS_REDIS") == "pubsub"
        else "channels_redis.core.RedisChannelLayer"
    )
    _layers: dict[str, Any] = {"default": {"BACKEND": _backend, "CONFIG": {"hosts": [_layer_url]}}}
else:
    _layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["channels"],
    MIDDLEWARE=[],
    CHANNEL_LAYERS=_layers,
    USE_TZ=True,
)
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

GROUP = "bench"


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello, world!", content_type="text/plain")


async def ahello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello, world!", content_type="text/plain")


urlpatterns = [path("", ahello)]


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data)


class Sub(AsyncWebsocketConsumer):
    groups = [GROUP]

    async def bench_msg(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


class Pub(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send(GROUP, {"type": "bench.msg", "text": text_data})


application = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": URLRouter(
            [
                path("ws/echo", Echo.as_asgi()),
                path("ws/sub", Sub.as_asgi()),
                path("ws/pub", Pub.as_asgi()),
            ]
        ),
    }
)
