"""Real Channels consumers on a chanlite layer: ``python checks.py NAME`` runs one check.

The layer is the one ``compat_site.settings`` reads from the environment; each check runs
in its own process (Django's settings are per process) and prints ``ok`` when it held.
Async checks run under ``asyncio.run()``, as a script or one test's event loop would, so a
layer that keeps the loop from closing makes the check time out instead of passing.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "compat_site.settings")

import django

django.setup()

from asgiref.sync import async_to_sync  # noqa: E402
from channels.exceptions import ChannelFull  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.testing import HttpCommunicator, WebsocketCommunicator  # noqa: E402
from compat_site.asgi import application  # noqa: E402

WAIT = 10.0
ORIGIN = [(b"origin", b"http://127.0.0.1")]
CHECKS: dict[str, Callable[[], Any]] = {}


def check(func: Callable[[], Any]) -> Callable[[], Any]:
    CHECKS[func.__name__] = func
    return func


async def connect(path: str) -> WebsocketCommunicator:
    client = WebsocketCommunicator(application, path, headers=ORIGIN)
    connected, _ = await client.connect(timeout=WAIT)
    assert connected, f"{path}: the handshake was refused"
    return client


async def whoami(client: WebsocketCommunicator) -> str:
    await client.send_json_to({"whoami": True})
    return str((await client.receive_json_from(timeout=WAIT))["channel"])


async def chat(path: str, group: str) -> None:
    """Two clients of one consumer class: group chat, a direct send, an outside sender."""
    layer = get_channel_layer()
    one, two = await connect(path), await connect(path)
    await one.send_json_to({"message": "hello"})
    assert await one.receive_json_from(timeout=WAIT) == {"message": "hello"}
    assert await two.receive_json_from(timeout=WAIT) == {"message": "hello"}
    # To exactly one consumer, by its channel name (a new_channel() name).
    channel = await whoami(one)
    await layer.send(channel, {"type": "chat.message", "message": "just you"})
    assert await one.receive_json_from(timeout=WAIT) == {"message": "just you"}
    # From code that is not a consumer (a view, a worker) to the group.
    await layer.group_send(group, {"type": "chat.message", "message": "from outside"})
    assert await one.receive_json_from(timeout=WAIT) == {"message": "from outside"}
    assert await two.receive_json_from(timeout=WAIT) == {"message": "from outside"}
    assert await two.receive_nothing(timeout=0.2)  # the direct message was not for two
    # A consumer that left the group gets no more of it.
    await one.disconnect()
    await two.send_json_to({"message": "after one left"})
    assert await two.receive_json_from(timeout=WAIT) == {"message": "after one left"}
    await two.disconnect()


@check
async def async_consumer() -> None:
    await chat("/ws/chat/lobby/", "chat_lobby")


@check
async def sync_consumer() -> None:
    await chat("/ws/sync-chat/lobby/", "chat_lobby")


@check
async def json_consumer() -> None:
    await chat("/ws/json-chat/lobby/", "json_chat")


@check
async def http_consumer() -> None:
    listener = await connect("/ws/chat/news/")
    notify = HttpCommunicator(application, "POST", "/notify/news/", body=b"breaking")
    response = await notify.get_response(timeout=WAIT)
    assert (response["status"], response["body"]) == (202, b"sent"), response
    assert await listener.receive_json_from(timeout=WAIT) == {"message": "breaking"}
    channel = await whoami(listener)
    direct = HttpCommunicator(application, "POST", f"/notify/news/?channel={channel}", b"psst")
    assert (await direct.get_response(timeout=WAIT))["status"] == 202
    assert await listener.receive_json_from(timeout=WAIT) == {"message": "psst"}
    await listener.disconnect()


@check
async def channel_full() -> None:
    # Channels code catches Channels' own exception class.
    layer = get_channel_layer()
    channel = await layer.new_channel()
    for n in range(layer.capacity):
        await layer.send(channel, {"type": "test.message", "n": n})
    try:
        await layer.send(channel, {"type": "test.message", "n": "one too many"})
    except ChannelFull:
        pass
    else:
        raise AssertionError("send() past capacity did not raise channels' ChannelFull")
    for n in range(layer.capacity):  # nothing lost, nothing extra
        assert (await asyncio.wait_for(layer.receive(channel), WAIT))["n"] == n
    # A capacity of its own for some channels (CONFIG's channel_capacity), as Channels'
    # test_send_specific_capacity configures it.
    await layer.send("compat.tiny", {"type": "test.message"})
    await layer.send("compat.tiny", {"type": "test.message"})
    try:
        await layer.send("compat.tiny", {"type": "test.message"})
    except ChannelFull:
        pass
    else:
        raise AssertionError("send() past a channel_capacity did not raise ChannelFull")


@check
def sync_calls() -> None:
    """Plain sync code (a sync consumer, a view, Channels' *_sync tests): every layer call
    through its own async_to_sync, so each runs on a new event loop."""
    layer = get_channel_layer()

    async def receive(channel: str) -> dict[str, Any]:
        return dict(await asyncio.wait_for(layer.receive(channel), WAIT))

    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.send)(channel, {"type": "test.message", "text": "Ahoy-hoy!"})
    assert async_to_sync(receive)(channel)["text"] == "Ahoy-hoy!"
    first, second = async_to_sync(layer.new_channel)(), async_to_sync(layer.new_channel)()
    for text in ("one", "two"):
        async_to_sync(layer.send)(first, {"type": "test.message", "text": text})
    async_to_sync(layer.send)(second, {"type": "test.message", "text": "three"})
    assert async_to_sync(receive)(first)["text"] == "one"
    assert async_to_sync(receive)(second)["text"] == "three"
    assert async_to_sync(receive)(first)["text"] == "two"
    async_to_sync(layer.group_add)("sync_group", first)
    async_to_sync(layer.group_add)("sync_group", second)
    async_to_sync(layer.group_send)("sync_group", {"type": "test.message", "text": "all"})
    assert async_to_sync(receive)(first)["text"] == "all"
    assert async_to_sync(receive)(second)["text"] == "all"


def main(name: str) -> None:
    func = CHECKS[name]
    if inspect.iscoroutinefunction(func):
        asyncio.run(func())
    else:
        func()
    print("ok", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
