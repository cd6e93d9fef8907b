"""Plain channels (``"jobs"``): queues in the file that any process may ``receive`` from.

Receivers in one process wait on one :class:`PlainReceivers`; when rows may have arrived
(a commit by this process, or a wake-up from another) it claims up to one row per waiting
receiver with ``DELETE ... RETURNING`` through the writer, so two processes never get the
same message. A receiver cancelled after it was handed a message puts it back for the
next receiver in this process, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from chanlite.layers import DecodeError, Message
from chanlite.layers.codec import Codec
from chanlite_sqlite.connection import resolve
from chanlite_sqlite.writer import Claim, Writer

logger = logging.getLogger("chanlite.layers.sqlite")


class _Queue:
    """Receivers in this process waiting on one plain channel, and what they left over."""

    __slots__ = ("buffer", "claiming", "dirty", "waiters")

    def __init__(self) -> None:
        self.buffer: deque[Message] = deque()
        self.waiters: deque[asyncio.Future[Message]] = deque()
        # The loop that submitted the claim in flight, if any.
        self.claiming: asyncio.AbstractEventLoop | None = None
        self.dirty = False


class PlainReceivers:
    """``receive()`` for plain channel names, on top of the writer's claims."""

    def __init__(self, writer: Callable[[], Writer | None], codec: Codec) -> None:
        self._writer = writer
        self._codec = codec
        self._queues: dict[str, _Queue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def receive(self, channel: str) -> Message:
        """Wait for the next message on the plain *channel*."""
        queue = self._queues.get(channel)
        if queue is None:
            queue = self._queues[channel] = _Queue()
        if queue.buffer:
            message = queue.buffer.popleft()
            self._forget_if_idle(channel, queue)
            return message
        loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        queue.waiters.append(future)
        self._claim(channel, queue)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Handed a message and cancelled before resuming: keep it for the next one.
                queue.buffer.appendleft(future.result())
            elif future in queue.waiters:
                queue.waiters.remove(future)
            raise
        finally:
            self._forget_if_idle(channel, queue)

    def committed(self, channels: set[str]) -> None:
        """This process just added rows to *channels*: waiting receivers claim them now."""
        for channel in channels:
            queue = self._queues.get(channel)
            if queue is not None and queue.waiters:
                self._claim(channel, queue)

    def remote_change(self) -> None:
        """Another process committed (called from the reader thread): look again."""
        loop = self._loop
        if loop is not None and self._queues and not loop.is_closed():
            loop.call_soon_threadsafe(self._claim_all)

    def clear(self) -> None:
        """Forget messages claimed but not yet handed out (``flush``)."""
        for queue in self._queues.values():
            queue.buffer.clear()

    def close(self) -> None:
        """Cancel every waiting receiver."""
        for queue in self._queues.values():
            for waiter in queue.waiters:
                waiter.cancel()
        self._queues.clear()

    def _claim_all(self) -> None:
        for channel, queue in list(self._queues.items()):
            if queue.waiters:
                self._claim(channel, queue)

    def _forget_if_idle(self, channel: str, queue: _Queue) -> None:
        if (
            not queue.buffer
            and not queue.waiters
            and queue.claiming is None
            and self._queues.get(channel) is queue
        ):
            del self._queues[channel]

    def _claim(self, channel: str, queue: _Queue) -> None:
        """Claim up to one row per waiting receiver from the file."""
        writer = self._writer()
        if writer is None:
            return
        if queue.claiming is not None and not queue.claiming.is_closed():
            queue.dirty = True  # claim again when this one is done
            return
        # (A claim submitted on a loop that has closed may wait in the writer's queue
        # until some other write starts a drain: claim from this loop meanwhile.)
        queue.claiming, queue.dirty = asyncio.get_running_loop(), False

        def done(payloads: list[bytes]) -> None:
            queue.claiming = None
            # The rows are taken from the file: they go to the channel's receivers here,
            # even if its queue was forgotten meanwhile (another claim ended first).
            target = self._queues.setdefault(channel, queue) if payloads else queue
            for payload in payloads:
                try:
                    message = self._codec.decode(payload)
                except DecodeError as exc:
                    logger.error("Skipping an undecodable message on %r: %s", channel, exc)
                    continue
                while target.waiters and _gone(target.waiters[0]):
                    target.waiters.popleft()
                if target.waiters:
                    resolve(target.waiters.popleft(), message)
                else:
                    target.buffer.append(message)
            if target.waiters and (target.dirty or payloads):
                self._claim(channel, target)
            else:
                self._forget_if_idle(channel, target)

        writer.submit(Claim(channel, max(1, len(queue.waiters)), done))


def _gone(waiter: asyncio.Future[Message]) -> bool:
    # Cancelled, or left on an event loop that has ended: nobody will take a message.
    return waiter.done() or waiter.get_loop().is_closed()
