"""Trailing markers: what reveals a loss at the very end of a sender's messages.

A receiver finds a message missing when a later number from the same sender arrives
(:mod:`chanlite_redis.sequence`). When nothing follows (a failover took the last messages
Redis had acknowledged, and the sender then went quiet there) nothing would reveal it.
So once a sender has not sent to a group (or to a process's inbox) for :data:`DELAY`
seconds, it sends one marker there: its last number, no payload. Sends only note the
key and when its marker is due (no timer per message); one task per event loop sends
the markers that are due.

A marker never overtakes a message it covers. A send takes its number before its call
to Redis, and that call may be slow (a slow or restarting server, a failover): a marker
with that number reaching the receivers first would have them count the message still
on its way as lost, and then drop it as one they had given up on. So each send runs
inside :meth:`Trailing.sending`, and no marker goes for a key while a send to it is
under way: its marker is due :data:`DELAY` seconds after the last of them is over.

A marker that fails (Redis unreachable) is tried again, with backoff, until one gets
through. A marker that got through may still be lost: to the master that died with the
messages it covers, or on pub/sub to a process that had not subscribed again on the new
server yet. So after a reconnect (this process's, or another process's that asks for
them on the control topic) the markers of every key sent to in the last
:data:`RESEND_WITHIN` seconds go out again; a receiver ignores a marker it has heard past.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
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
#: Sends the marker of a key. It reads the key's last number before its first await, so a
#: marker started while no send to the key is under way carries no number still on its way.
Send = Callable[[Key], Awaitable[None]]
Spawn = Callable[[Awaitable[None]], None]


class Trailing:
    """The markers one process owes: due ones, and recent ones to send again."""

    def __init__(self, send: Send, spawn: Spawn) -> None:
        self._send = send
        self._spawn = spawn
        # key -> when its marker is due (monotonic), in that order (a new send moves it).
        # A key with sends under way stays here, not marked, until they are over.
        self._due: dict[Key, float] = {}
        # key -> how many sends to it are under way (numbered, their call not over).
        self._sending: Counter[Key] = Counter()
        # How many sends have ended in all; a flush() waiting for some is woken by each.
        self._ended = 0
        self._an_end: asyncio.Future[None] | None = None
        # key -> when its marker last went, oldest first.
        self._recent: dict[Key, float] = {}
        self._retry = RETRY
        self._running: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Future[None] | None = None

    def sending(self, key: Key) -> _Sending:
        """Around one send to *key*: from taking its number to the end of its Redis call.

        The number is taken inside, the call awaited inside. Until every send to *key*
        under way is over (done, failed or cancelled), no marker goes for it: the marker
        carries the last number taken, and must not reach the receivers before the
        message with that number. It is due :data:`DELAY` seconds after the last is over.
        """
        # A class, not a generator context manager: this is on every numbered send.
        return _Sending(self, key)

    def _begin(self, key: Key) -> None:
        self._sending[key] += 1
        self._note(key)
        if self._running is None or self._running.is_closed():
            self._start()

    def _end(self, key: Key) -> None:
        self._ended += 1
        left = self._sending[key] - 1
        if left > 0:
            self._sending[key] = left
        else:
            del self._sending[key]
            # The pause runs from the end of the last send. No task is started here:
            # the one started by _begin keeps running while the key is due, unless it
            # was stopped (the layer closed, its loop ended, maybe with this send
            # cancelled), and then the next loop sends what is owed (pending()).
            self._note(key)
        if self._an_end is not None:
            self._wake_flush()

    def _note(self, key: Key) -> None:
        """*key*'s marker is due after a pause from now."""
        due = self._due
        due.pop(key, None)
        due[key] = time.monotonic() + DELAY

    def _wake_flush(self) -> None:
        # A send ended: a flush() waiting for it looks again (from any thread: a sync
        # caller's send runs on a loop of its own).
        idle = self._an_end
        if idle is None or idle.done():
            return
        with contextlib.suppress(RuntimeError):  # its loop was closed: nobody waits
            idle.get_loop().call_soon_threadsafe(_resolve, idle)

    def again(self) -> None:
        """A reconnect: the markers of recently sent-to keys go out again, now.

        A key with a send under way is due already, and waits for it as any other.
        """
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
                busy = self._sending
                ready = [k for k, when in self._due.items() if when <= now and k not in busy]
                if not ready:
                    # A new send, or the end of one under way (which makes its key due
                    # DELAY later), is due DELAY from now at the latest: look again by then.
                    idle = [when for k, when in self._due.items() if k not in busy]
                    await self._nap(min(min(idle, default=now + DELAY) - now, DELAY))
                    continue
                for key in ready:
                    del self._due[key]
                await asyncio.gather(*(self._mark(key) for key in ready))
        finally:
            if self._running is asyncio.get_running_loop():
                self._running = None

    async def _mark(self, key: Key) -> None:
        if key in self._sending:
            # A send to it began after the key was found ready and before this task ran:
            # its marker waits for that send (the key is due again already).
            return
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
        """Send every marker owed now, once (the layer is closing), within *timeout*.

        Sends under way when it is called are waited for first, for up to *timeout*
        too: their markers are the very ones that reveal a loss at the end of what this
        process sent, so skipping them would leave just that loss unseen (and the wait
        is over as soon as they are). Sends begun since are not waited for (a process
        that keeps sending would hold the close for the whole *timeout*). The markers of
        keys with a send still under way after the wait are not sent (they would
        overtake it); those keys stay due.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # As many sends as are under way now must end (any, in the count: a key still
        # busy at the end is skipped below anyway).
        until = self._ended + sum(self._sending.values())
        while self._sending and self._ended < until and loop.time() < deadline:
            idle = self._an_end
            if idle is None or idle.done() or idle.get_loop() is not loop:
                idle = self._an_end = loop.create_future()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(idle), deadline - loop.time())
        due = {key: when for key, when in self._due.items() if key not in self._sending}
        for key in due:
            del self._due[key]
        if not due:
            return
        try:
            await asyncio.wait_for(
                asyncio.gather(*(self._flush_one(key) for key in due), return_exceptions=True),
                timeout,
            )
        except asyncio.TimeoutError:
            logger.debug("%d trailing markers not sent at close", len(due))

    async def _flush_one(self, key: Key) -> None:
        if key in self._sending:
            # A send to it began while the flush waited its turn: it is due again.
            return
        await self._send(key)


class _Sending:
    """:meth:`Trailing.sending`'s context: one send under way to one key."""

    __slots__ = ("_key", "_trailing")

    def __init__(self, trailing: Trailing, key: Key) -> None:
        self._trailing = trailing
        self._key = key

    def __enter__(self) -> None:
        self._trailing._begin(self._key)

    def __exit__(self, *exc_info: object) -> None:
        self._trailing._end(self._key)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
