"""Blocking senders for code with no event loop: Django views, signals, scripts, threads.

::

    from chanlite.sync import SyncSender
    sender = SyncSender("sqlite:///chat.db")      # or an App: SyncSender(app) / app.sync
    sender.group_send("chat.lobby", {"type": "chat.message", "text": "hi"})
    sender.broadcast("chat.lobby", json={"text": "hi"})

Calls are safe from any thread. Layer coroutines run on one private event loop in a daemon
thread shared by the whole process, so no loop leaks into the caller. Given an :class:`App`
whose loop is running in this process (a view called from a handler's thread pool, say),
the call is handed to that loop instead, so the in-memory layer works too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from chanlite.dispatcher import broadcast_event
from chanlite.layers.base import BaseLayer, Message
from chanlite.layers.registry import get_layer

if TYPE_CHECKING:
    from chanlite.app import App

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_layers: dict[str, BaseLayer] = {}


def _private_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="chanlite-sync", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def run(coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop | None = None) -> T:
    """Run *coro* to completion on *loop* (default: the private loop) and return its result."""
    target = loop or _private_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is target:
        coro.close()
        raise RuntimeError(
            "A chanlite sync call was made on the event loop thread; "
            "await the async API (app.send / app.group_send / app.broadcast) instead."
        )
    return asyncio.run_coroutine_threadsafe(coro, target).result()


class SyncSender:
    """Send to channels and groups through a layer, from plain synchronous code."""

    def __init__(self, target: str | App) -> None:
        self._target = target

    def _layer_and_loop(self) -> tuple[BaseLayer, asyncio.AbstractEventLoop]:
        target = self._target
        if not isinstance(target, str):
            task = target.dispatcher._task
            if target._layer is not None and task is not None and not task.done():
                return target.layer, task.get_loop()
            if target.layer_url is None:
                raise RuntimeError(
                    "This App's layer is an object and its loop is not running; "
                    "give SyncSender a layer URL instead."
                )
            target = target.layer_url
        loop = _private_loop()
        with _lock:
            layer = _layers.get(target)
            if layer is None:
                layer = _layers[target] = get_layer(target)
        return layer, loop

    def send(self, channel: str, event: Message) -> None:
        """Send *event* to *channel*; raises ChannelFull when it is at capacity."""
        layer, loop = self._layer_and_loop()
        run(layer.send(channel, event), loop)

    def group_send(self, group: str, event: Message) -> None:
        """Send *event* to every member of *group*."""
        layer, loop = self._layer_and_loop()
        run(layer.group_send(group, event), loop)

    def broadcast(
        self,
        group: str,
        *,
        text: str | None = None,
        bytes: bytes | None = None,
        json: Any = None,
    ) -> None:
        """Write one frame (exactly one of text/bytes/json) to every member socket of *group*."""
        layer, loop = self._layer_and_loop()
        run(layer.group_send(group, broadcast_event(text=text, bytes=bytes, json=json)), loop)


def send(layer_url: str, channel: str, event: Message) -> None:
    """Send *event* to *channel* through the layer at *layer_url*."""
    SyncSender(layer_url).send(channel, event)


def group_send(layer_url: str, group: str, event: Message) -> None:
    """Send *event* to *group* through the layer at *layer_url*."""
    SyncSender(layer_url).group_send(group, event)


def broadcast(
    layer_url: str,
    group: str,
    *,
    text: str | None = None,
    bytes: bytes | None = None,
    json: Any = None,
) -> None:
    """Broadcast one frame to *group*'s sockets through the layer at *layer_url*."""
    SyncSender(layer_url).broadcast(group, text=text, bytes=bytes, json=json)


def close() -> None:
    """Close the layers the private loop opened (e.g. at the end of a script)."""
    with _lock:
        layers = list(_layers.values())
        _layers.clear()
    if layers and _loop is not None:
        for layer in layers:
            run(layer.close(), _loop)
