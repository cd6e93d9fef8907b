"""One layer reader per process, feeding every local connection.

Connections get channel names lazily (only when they join a group or read
``ws.channel_name``), and all of them are served by a single ``receive_local()`` loop, so
adding connections adds no polling. A group message names every local member at once:
a ``chanlite.broadcast`` frame is then encoded once and the same bytes are written to each
member's transport when the server offers the ``chanlite.frames`` extension.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from chanlite.broadcast import BROADCAST, broadcast_event, encode_frame
from chanlite.layers.base import Message

if TYPE_CHECKING:
    from chanlite.app import App


class Receiver(Protocol):
    """What the dispatcher delivers to: a WebSocket, or a :class:`Subscription`."""

    @property
    def frame_writer(self) -> Callable[[bytes], bool] | None: ...

    @property
    def events_pending(self) -> bool: ...

    def push_event(self, event: Message) -> None: ...


logger = logging.getLogger("chanlite.dispatcher")

__all__ = [
    "BROADCAST",
    "DispatchStats",
    "Dispatcher",
    "Receiver",
    "broadcast_event",
    "encode_frame",
]


@dataclass
class DispatchStats:
    """Counters an app can read (``app.stats``) to see what the dispatcher did."""

    events_delivered: int = 0
    events_unhandled: int = 0
    events_undeliverable: int = 0
    broadcast_frames: int = 0
    broadcast_dropped: int = 0
    layer_errors: int = 0


class Dispatcher:
    """Routes ``receive_local()`` results to the connections of one process."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.connections: dict[str, Receiver] = {}
        self.stats = DispatchStats()
        self._counter = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._prefix: str | None = None

    def register(self, ws: Receiver) -> str:
        """Give *ws* a channel name local to this process and start reading if needed."""
        prefix = self._prefix
        if prefix is None:
            prefix = self._prefix = f"ws.{self.app.layer.client_id}!"
        name = f"{prefix}{next(self._counter)}"
        self.connections[name] = ws
        self.start()
        return name

    def unregister(self, name: str) -> None:
        """Forget a connection's channel."""
        self.connections.pop(name, None)

    def start(self) -> None:
        """Start the reader task on the running loop, once."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the reader task."""
        task, self._task = self._task, None
        # The next layer (an App served again) has a new client_id: names must follow it.
        self._prefix = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        layer = self.app.layer
        delay = 0.05
        while True:
            try:
                channels, message = await layer.receive_local()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A layer outage must not kill the reader: log, back off, try again.
                self.stats.layer_errors += 1
                logger.exception("Channel layer receive failed; retrying in %.2fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            try:
                self.deliver(channels, message)
            except Exception:  # never let one bad event stop delivery to everyone
                logger.exception("Delivering a %r event failed", message.get("type"))

    def deliver(self, channels: Sequence[str], message: Message) -> None:
        """Hand *message* to the connections behind *channels* (no awaiting, no copies)."""
        connections = self.connections
        if message.get("type") == BROADCAST:
            self._broadcast(channels, message)
            return
        for channel in channels:
            ws = connections.get(channel)
            if ws is None:
                self.stats.events_undeliverable += 1
                logger.debug("No local connection for %r; event dropped", channel)
                continue
            self.stats.events_delivered += 1
            ws.push_event(message)

    def _broadcast(self, channels: Sequence[str], message: Message) -> None:
        frame: bytes | None = None
        stats = self.stats
        connections = self.connections
        for channel in channels:
            ws = connections.get(channel)
            if ws is None:
                stats.events_undeliverable += 1
                continue
            writer = ws.frame_writer
            if writer is None or ws.events_pending:
                # No raw transport (a foreign server), or earlier events still queued:
                # go through the connection's ordered queue.
                ws.push_event(message)
                continue
            if frame is None:
                frame = encode_frame(message)
            if writer(frame):
                stats.broadcast_frames += 1
            else:
                stats.broadcast_dropped += 1
