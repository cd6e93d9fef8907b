"""Channels-style ``receive()`` on plain channel names, which any process may read.

A plain channel (``"worker-jobs"``, not made by ``new_channel()``) is a list in Redis.
``receive`` pops its oldest unexpired entry atomically; when the list is empty it sleeps
on the channel's wake topic, which every send publishes to. It subscribes *before* looking,
so a send that lands after an empty look always wakes it, and it looks again every
second anyway (and after a reconnect) in case a wake-up was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from chanlite.layers.base import Message
from chanlite_redis import scripts

if TYPE_CHECKING:
    from chanlite_redis.layer import RedisLayer

logger = logging.getLogger("chanlite.layers.redis")

#: A receiver re-checks its list this often even without a wake-up (seconds).
RECHECK = 1.0
#: A wake topic stays subscribed this long after its last receiver left: a worker loop
#: calls receive() again at once.
LINGER = 5.0


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
    """The plain-channel receivers of one layer, by channel."""

    def __init__(self, layer: RedisLayer) -> None:
        # The layer's connections, scripts and codec are shared, not copied.
        self._layer = layer
        self._wakes: dict[str, _Wake] = {}

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
        layer = self._layer
        key = layer.keys.channel(channel)
        topic = layer.keys.wake_topic(channel)
        wake = self._wakes.get(channel)
        if wake is None:
            wake = self._wakes[channel] = _Wake()
        wake.users += 1
        try:
            # Subscribed before looking, so a send after an empty look always wakes us.
            await layer._ensure_listener().subscribe(topic)
            while True:
                seen = wake.generation
                entry = await self._pop(key)
                if entry is not None:
                    try:
                        return layer._codec.decode(memoryview(entry)[scripts.STAMP :])
                    except ValueError as exc:
                        logger.error("Dropped a malformed message on %r: %s", channel, exc)
                        continue
                await wake.wait(seen, RECHECK)
        finally:
            wake.users -= 1
            if wake.users == 0:
                # Stay subscribed a while: a worker loop calls receive() again at once.
                asyncio.get_running_loop().call_later(LINGER, self._unwatch, channel, wake, topic)

    def _unwatch(self, channel: str, wake: _Wake, topic: str) -> None:
        layer = self._layer
        if wake.users == 0 and self._wakes.get(channel) is wake:
            del self._wakes[channel]
            if layer._listener is not None:
                layer._spawn(layer._listener.unsubscribe(topic))

    async def _pop(self, key: str) -> bytes | None:
        layer = self._layer
        # The pop runs to completion even if our caller is cancelled; a message it took
        # is then put back at the head, so a cancelled receive() loses nothing.
        pop = asyncio.ensure_future(
            layer._call("receive", lambda c: layer._pop_script(keys=[key], client=c))
        )
        try:
            entry = await asyncio.shield(pop)
        except asyncio.CancelledError:
            pop.add_done_callback(lambda done: self._put_back(key, done))
            raise
        return entry if isinstance(entry, bytes) else None

    def _put_back(self, key: str, pop: asyncio.Future[Any]) -> None:
        layer = self._layer
        if pop.cancelled() or pop.exception() is not None:
            return
        entry = pop.result()
        if isinstance(entry, bytes):
            ttl = layer._ms(layer.expiry) + 1000
            layer._spawn(
                layer._call(
                    "receive",
                    lambda c: layer._push_back_script(keys=[key], args=[entry, ttl], client=c),
                )
            )
