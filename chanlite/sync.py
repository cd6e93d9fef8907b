"""Blocking senders for code with no event loop: Django views, signals, scripts, threads.

::

    from chanlite.sync import SyncSender
    sender = SyncSender("sqlite:///chat.db")      # or an App: SyncSender(app) / app.sync
    sender.group_send("chat.lobby", {"type": "chat.message", "text": "hi"})
    sender.broadcast("chat.lobby", json={"text": "hi"})

Calls are safe from any thread. A layer that can send from plain threads
(:class:`~chanlite.layers.base.BlockingSends`, e.g. SQLite) is called directly: no event
loop, no thread hop. Otherwise the layer's coroutines run on one private event loop in a
daemon thread shared by the whole process, so no loop leaks into the caller. Given an App
(or its hub) serving in this process (a view called from a handler's thread pool, say),
its own layer is used, on its own loop, so the in-memory layer works too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from chanlite.broadcast import broadcast_event
from chanlite.hub import HasHub, Hub
from chanlite.layers.base import BaseLayer, BlockingSends, Event
from chanlite.layers.registry import get_layer
from chanlite.layers.streams import HistoryPage, StreamPosition

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
    """Send to channels and groups through a layer, from plain synchronous code.

    *target* is a layer URL, a :class:`~chanlite.hub.Hub`, anything with a ``hub`` (an
    :class:`~chanlite.App`), or a layer object (its coroutines run on the private loop;
    closing it is the caller's business).

    ``send``, ``group_send`` and ``broadcast`` return what the layer can tell of who the
    message reached (see :meth:`~chanlite.layers.BaseLayer.group_send_counted`): a number
    of members (receivers for a channel), or None when it cannot tell.
    """

    def __init__(self, target: str | Hub | HasHub | BaseLayer) -> None:
        self._target: str | Hub | BaseLayer = (
            target if isinstance(target, (str, Hub, BaseLayer)) else target.hub
        )

    def layer_and_loop(self) -> tuple[BaseLayer, asyncio.AbstractEventLoop | None]:
        """The layer to send through and the loop to run its coroutines on.

        The loop is None when the layer offers blocking sends (no loop is needed). For a
        hub that is serving, its own layer and loop; else a private layer built from the
        URL, shared by the process, and the private loop.
        """
        target = self._target
        if isinstance(target, BaseLayer):
            return target, None if isinstance(target, BlockingSends) else _private_loop()
        hub: Hub | None = None
        if isinstance(target, Hub):
            hub = target
            loop = target.running_loop()
            if loop is not None:
                layer = target.layer
                return layer, None if isinstance(layer, BlockingSends) else loop
            if target.layer_url is None:
                raise RuntimeError(
                    "This App's layer is an object and its loop is not running; "
                    "give SyncSender a layer URL instead."
                )
            target = target.layer_url
        with _lock:
            private = _layers.get(target)
            if private is None:
                private = _layers[target] = get_layer(target)
            if hub is not None:
                # The App's history declarations hold for what its sync senders send.
                hub.apply_history(private)
        if isinstance(private, BlockingSends):
            return private, None
        return private, _private_loop()

    def send(self, channel: str, event: Event) -> int | None:
        """Send *event* to *channel*; raises ChannelFull when it is at capacity."""
        layer, loop = self.layer_and_loop()
        if loop is None and isinstance(layer, BlockingSends):
            return layer.send_blocking(channel, event)
        return run(layer.send_counted(channel, event), loop)

    def group_send(self, group: str, event: Event) -> int | None:
        """Send *event* to every member of *group*; returns how many there were."""
        layer, loop = self.layer_and_loop()
        if loop is None and isinstance(layer, BlockingSends):
            return layer.group_send_blocking(group, event)
        return run(layer.group_send_counted(group, event), loop)

    def broadcast(
        self,
        group: str,
        *,
        text: str | None = None,
        bytes: bytes | None = None,
        json: Any = None,
    ) -> int | None:
        """Write one frame (exactly one of text/bytes/json) to every member socket of *group*."""
        return self.group_send(group, broadcast_event(text=text, bytes=bytes, json=json))

    def _reading(self) -> tuple[BaseLayer, asyncio.AbstractEventLoop]:
        # Reads are coroutines on every layer: the serving loop, else the private one.
        layer, loop = self.layer_and_loop()
        if loop is None:
            target = self._target
            served = target.running_loop() if isinstance(target, Hub) else None
            loop = served or _private_loop()
        return layer, loop

    def history(
        self, group: str, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryPage:
        """Read history group *group* (see :meth:`chanlite.App.history_since`)."""
        layer, loop = self._reading()
        return run(layer.history(group, since, limit), loop)

    def presence(self, group: str) -> dict[str, list[dict[str, Any]]]:
        """Who is present in *group*: key -> metas (see :meth:`chanlite.App.presence`)."""
        layer, loop = self._reading()
        return run(layer.presence(group), loop)


def send(layer_url: str, channel: str, event: Event) -> int | None:
    """Send *event* to *channel* through the layer at *layer_url*."""
    return SyncSender(layer_url).send(channel, event)


def group_send(layer_url: str, group: str, event: Event) -> int | None:
    """Send *event* to *group* through the layer at *layer_url*; returns how many members
    it had, when the layer can tell."""
    return SyncSender(layer_url).group_send(group, event)


def broadcast(
    layer_url: str,
    group: str,
    *,
    text: str | None = None,
    bytes: bytes | None = None,
    json: Any = None,
) -> int | None:
    """Broadcast one frame to *group*'s sockets through the layer at *layer_url*."""
    return SyncSender(layer_url).broadcast(group, text=text, bytes=bytes, json=json)


def close() -> None:
    """Close the layers the private loop opened (e.g. at the end of a script)."""
    with _lock:
        layers = list(_layers.values())
        _layers.clear()
    if layers:
        loop = _private_loop()  # a layer with blocking sends may never have needed it
        for layer in layers:
            run(layer.close(), loop)
