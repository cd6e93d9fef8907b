"""Per-channel ``receive()`` on top of a layer's process-wide ``receive_local()``.

chanlite's dispatcher reads ``receive_local()`` directly. Django Channels consumers call
``receive(channel)`` for their own channel instead; :class:`LocalDemux` serves them by
running one reader task that sorts local messages into per-channel queues, the way
channels_redis does. Each layer owns one and calls it for local channel names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from chanlite.layers.base import Message

ReceiveLocal = Callable[[], Awaitable[tuple[Sequence[str], Message]]]


class LocalDemux:
    """Sorts ``receive_local()`` results into one queue per local channel."""

    __slots__ = ("_queues", "_reader", "_receive_local")

    def __init__(self, receive_local: ReceiveLocal) -> None:
        self._receive_local = receive_local
        self._queues: dict[str, asyncio.Queue[Message]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def receive(self, channel: str) -> Message:
        """Wait for the next message for the local *channel*."""
        queue = self._queues.get(channel)
        if queue is None:
            queue = self._queues[channel] = asyncio.Queue()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())
        try:
            return await queue.get()
        finally:
            # A channel nobody waits on and with nothing queued needs no queue.
            if queue.empty() and self._queues.get(channel) is queue:
                getter_waiting = bool(getattr(queue, "_getters", None))
                if not getter_waiting:
                    del self._queues[channel]

    async def _read(self) -> None:
        while True:
            channels, message = await self._receive_local()
            for channel in channels:
                queue = self._queues.get(channel)
                if queue is None:
                    queue = self._queues[channel] = asyncio.Queue()
                queue.put_nowait(message)

    async def close(self) -> None:
        """Stop the reader task and forget queued messages."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        self._queues.clear()
