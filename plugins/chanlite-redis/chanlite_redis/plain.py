"""Channels-style ``receive()`` on plain channel names, which any process may read.

A plain channel (``"worker-jobs"``, not made by ``new_channel()``) is a list in Redis.
``receive`` pops its oldest unexpired entry atomically; when the list is empty it sleeps
on the channel's wake topic, which every send publishes to. It subscribes *before* looking,
so a send that lands after an empty look always wakes it, and it looks again every
second anyway (and after a reconnect) in case a wake-up was lost.

A cancelled ``receive`` loses nothing, wherever the cancellation lands (also when its
event loop is shutting down and the reply of a pop is still on the wire): each pop carries
a token and keeps what it took under it for a while, and a cancelled reader runs
``RESTORE`` with the token, which puts the entry back at the head, or, if the pop has not
reached the server yet, makes it a no-op.

:class:`PlainChannels` gets what it needs from its layer as explicit parts
(:class:`PlainParts`): key names, the codec, a way to run a command, the two scripts, and
subscribe/unsubscribe for wake topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from chanlite.layers import Codec, Message
from chanlite_redis import scripts
from chanlite_redis.tasks import cancels_now, raise_if_cancelled_since

logger = logging.getLogger("chanlite.layers.redis")

#: A receiver re-checks its list this often even without a wake-up (seconds).
RECHECK = 1.0
#: A wake topic stays subscribed this long after its last receiver left: a worker loop
#: calls receive() again at once.
LINGER = 5.0

#: Runs one Redis command: ``call(what, run)`` with ``run(client)`` doing the work.
Call = Callable[[str, Callable[[Redis], Awaitable[Any]]], Awaitable[Any]]


@dataclass(frozen=True)
class PlainParts:
    """What plain-channel receivers use of their layer (for one event loop)."""

    keys: scripts.Keys
    codec: Codec
    #: Runs a command, turning Redis trouble into layer errors.
    call: Call
    #: ``scripts.POP`` and ``scripts.RESTORE``, registered on the loop's client.
    pop: AsyncScript
    restore: AsyncScript
    #: Subscribe to a wake topic (confirmed); unsubscribe in the background.
    subscribe: Callable[[str], Awaitable[None]]
    unsubscribe: Callable[[str], None]
    #: How long a message lives (ms): bounds how long a popped copy is kept for RESTORE.
    expiry_ms: int
    #: Longest wait for a RESTORE after a cancellation (seconds).
    timeout: float


class _Wake:
    """Receivers waiting on one plain channel, woken by its pub/sub topic."""

    __slots__ = ("event", "generation", "users")

    def __init__(self) -> None:
        self.users = 0
        self.generation = 0
        self.event = asyncio.Event()

    def bump(self) -> None:
        self.generation += 1
        self.event.set()
        self.event = asyncio.Event()

    async def wait(self, seen: int, timeout: float) -> None:
        if self.generation != seen:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)


class PlainChannels:
    """The plain-channel receivers of one layer on one event loop, by channel."""

    def __init__(self, parts: PlainParts) -> None:
        self._parts = parts
        self._wakes: dict[str, _Wake] = {}
        # A popped copy is kept long enough for a RESTORE bounded by the timeout.
        self._hold_ms = max(1000, int(parts.timeout * 2000))

    def wake(self, channel: str) -> None:
        """A message was sent to *channel*: let its receivers look."""
        wake = self._wakes.get(channel)
        if wake is not None:
            wake.bump()

    def wake_all(self) -> None:
        """Wake-ups may have been missed (a reconnect): let every receiver look again."""
        for wake in self._wakes.values():
            wake.bump()

    async def receive(self, channel: str) -> Message:
        """Wait for the next message on the plain *channel*."""
        parts = self._parts
        topic = parts.keys.wake_topic(channel)
        wake = self._wakes.get(channel)
        if wake is None:
            wake = self._wakes[channel] = _Wake()
        wake.users += 1
        cancels = cancels_now()
        try:
            # Subscribed before looking, so a send after an empty look always wakes us.
            await parts.subscribe(topic)
            while True:
                raise_if_cancelled_since(cancels)  # swallowed by wait_for, say
                seen = wake.generation
                entry = await self._pop(channel)
                if entry is not None:
                    try:
                        return parts.codec.decode(memoryview(entry)[scripts.STAMP :])
                    except ValueError as exc:
                        logger.error("Dropped a malformed message on %r: %s", channel, exc)
                        continue
                await wake.wait(seen, RECHECK)
        finally:
            wake.users -= 1
            if wake.users == 0:
                # Stay subscribed a while: a worker loop calls receive() again at once.
                # (No running loop: collected after its loop was closed by hand.)
                with contextlib.suppress(RuntimeError):
                    loop = asyncio.get_running_loop()
                    loop.call_later(LINGER, self._unwatch, channel, wake, topic)

    def _unwatch(self, channel: str, wake: _Wake, topic: str) -> None:
        if wake.users == 0 and self._wakes.get(channel) is wake:
            del self._wakes[channel]
            self._parts.unsubscribe(topic)

    async def _pop(self, channel: str) -> bytes | None:
        parts = self._parts
        token = secrets.token_hex(8)
        keys = [
            parts.keys.channel(channel),
            parts.keys.taken(channel, token),
            parts.keys.dropped(channel, token),
        ]
        try:
            entry = await parts.call(
                "receive", lambda c: parts.pop(keys=keys, args=[self._hold_ms], client=c)
            )
        except asyncio.CancelledError:
            await self._restore(keys)
            raise
        return entry if isinstance(entry, bytes) else None

    async def _restore(self, keys: list[str]) -> None:
        """Undo a pop whose reader was cancelled (it may or may not have run)."""
        parts = self._parts
        args = [self._hold_ms, parts.expiry_ms + 1000]
        try:
            await asyncio.wait_for(
                parts.call("receive", lambda c: parts.restore(keys=keys, args=args, client=c)),
                parts.timeout,
            )
        except Exception as exc:  # Redis gone: nothing more can be done from here
            logger.warning("A cancelled receive() could not put back what it took: %s", exc)
