"""Trailing markers: what reveals a loss at the very end of a sender's messages.

A receiver finds a message missing when a later number from the same sender arrives
(:mod:`chanlite_redis.sequence`). When nothing follows (a failover took the last messages
Redis had acknowledged, and the sender then went quiet there) nothing would reveal it.
So once a sender has not sent to a group (or to a process's inbox) for :data:`DELAY`
seconds, it sends one marker there: its last number, no payload. Sends only note the
key and when its marker is due (no timer per message); one task per event loop sends
the markers that are due.

A marker that fails (Redis unreachable) is tried again, with backoff, until one gets
through. A marker that got through may still be lost: to the master that died with the
messages it covers, or on pub/sub to a process that had not subscribed again on the new
server yet. So after a reconnect (this process's, or another process's that asks for
them on the control topic) the markers of every key sent to in the last
:data:`RESEND_WITHIN` seconds go out again; a receiver ignores a marker it has heard past.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from chanlite.layers import LayerError

logger = logging.getLogger("chanlite.layers.redis")

#: Seconds without a send to a key before its marker goes.
DELAY = 0.3
#: After a reconnect, markers go again for the keys sent to in this many seconds.
RESEND_WITHIN = 60.0
#: Backoff of a marker that failed: from RETRY up to MAX_RETRY seconds.
RETRY = 0.1
MAX_RETRY = 2.0
#: Keys remembered for a re-send; past it the longest-remembered is forgotten.
MAX_KEYS = 65536

#: What a marker is for: ``("g", group)`` or ``("d", process id)``.
Key = tuple[str, str]
Send = Callable[[Key], Awaitable[None]]
Spawn = Callable[[Awaitable[None]], None]


class Trailing:
    """The markers one process owes: due ones, and recent ones to send again."""

    def __init__(self, send: Send, spawn: Spawn) -> None:
        self._send = send
        self._spawn = spawn
        # key -> when its marker is due (monotonic), in that order (a new send moves it).
        self._due: dict[Key, float] = {}
        # key -> when its marker last went, oldest first.
        self._recent: dict[Key, float] = {}
        self._retry = RETRY
        self._running: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Future[None] | None = None

    def sent(self, key: Key) -> None:
        """A message was just numbered for *key*: its marker is due after a pause."""
        due = self._due
        due.pop(key, None)
        due[key] = time.monotonic() + DELAY
        if self._running is None or self._running.is_closed():
            self._start()

    def again(self) -> None:
        """A reconnect: the markers of recently sent-to keys go out again, now."""
        cutoff = time.monotonic() - RESEND_WITHIN
        now = time.monotonic()
        for key, when in list(self._recent.items()):
            if when >= cutoff and key not in self._due:
                self._due[key] = now
        if self._due:
            if self._wake is not None and not self._wake.done():
                self._wake.set_result(None)
            if self._running is None or self._running.is_closed():
                self._start()

    def pending(self) -> bool:
        """True if markers are owed (for a new event loop to take them over)."""
        return bool(self._due)

    def _start(self) -> None:
        try:
            self._running = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next one that sends (or adopts the layer) starts it
        self._spawn(self._run())

    async def _run(self) -> None:
        try:
            while self._due:
                now = time.monotonic()
                ready = [key for key, when in self._due.items() if when <= now]
                if not ready:
                    # A new send is due DELAY from now at the latest: look again by then.
                    await self._nap(min(min(self._due.values()) - now, DELAY))
                    continue
                for key in ready:
                    del self._due[key]
                await asyncio.gather(*(self._mark(key) for key in ready))
        finally:
            if self._running is asyncio.get_running_loop():
                self._running = None

    async def _mark(self, key: Key) -> None:
        try:
            await self._send(key)
        except LayerError as exc:
            logger.debug("trailing marker for %r not sent (%s); trying again", key, exc)
            if key not in self._due:  # a send since then set its own time
                self._due[key] = time.monotonic() + self._retry
            self._retry = min(self._retry * 2, MAX_RETRY)
            return
        self._retry = RETRY
        self._recent.pop(key, None)
        if len(self._recent) >= MAX_KEYS:
            del self._recent[next(iter(self._recent))]
        self._recent[key] = time.monotonic()

    async def _nap(self, seconds: float) -> None:
        wake = self._wake = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(wake, seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            self._wake = None

    async def flush(self, timeout: float) -> None:
        """Send every marker owed now, once (the layer is closing)."""
        due, self._due = self._due, {}
        if not due:
            return
        try:
            await asyncio.wait_for(
                asyncio.gather(*(self._send(key) for key in due), return_exceptions=True),
                timeout,
            )
        except asyncio.TimeoutError:
            logger.debug("%d trailing markers not sent at close", len(due))
