"""The local inbox: the per-process queue behind a layer's ``receive_local()``.

Every layer keeps what is addressed to its own channels (those made by ``new_channel()``)
in one :class:`LocalInbox`: group messages as *one* entry naming every local member,
direct sends as one entry naming one channel. The inbox does the bookkeeping every
backend needs and that is easy to get subtly wrong, so a backend only moves bytes:

* **capacity** -- pending messages are counted per channel; :meth:`LocalInbox.offer`
  queues a message for the channels with room and returns the full ones;
* **expiry** -- entries are in arrival order, so expired ones sit at the head and are
  dropped there when the inbox is next touched (no timer, no scan);
* **the waiter** -- :meth:`LocalInbox.get` waits for the next entry.

Two guarantees hold for everything here, and the contract suite checks them per layer:

* **Loop-change safe.** Entries live in a plain deque, not in an ``asyncio.Queue``; a
  waiter is a future made by the call that waits, on the loop it runs on, and one whose
  loop has gone (``async_to_sync`` makes a loop per call, pytest-asyncio one per test) is
  skipped. A layer used from successive loops keeps every queued message.
* **Cancellation safe.** An entry is taken off the queue only by code that returns it
  without awaiting again; a waiter is only a wake-up, so a call cancelled after being
  woken has taken nothing, and the cancel is never swallowed.

Puts may come from any thread (a backend's reader thread, say): the inbox holds a lock
for its few lines of bookkeeping and wakes waiters on their own loops.

Backpressure: when a caller in this process fills a local member faster than the reader
drains the inbox (``group_send`` in a loop that never yields), :meth:`wait_for_room`
lets it wait, bounded, for the reader to make room before the layer counts a drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from chanlite.layers.base import Event

#: ``(expires, channels, event, ack)``: *ack* is the backend's handle on the stored copy
#: (a row id, say), handed back through ``acknowledge`` once the entry leaves the inbox.
Entry = tuple[float, tuple[str, ...], Event, Any]

Acknowledge = Callable[[list[Any]], None]


def wake(future: asyncio.Future[Any], result: Any = None) -> None:
    """Complete *future* with *result* from any thread; a future of a closed loop is left.

    A future whose loop is closed can never run its callbacks: nothing waits on it any
    more, so there is nothing to do.
    """
    if future.done():
        return
    loop = future.get_loop()
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        future.set_result(result)
    elif not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # closed between the check and the call
            loop.call_soon_threadsafe(_set_result, future, result)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


class LocalInbox:
    """FIFO of ``(channels, event)`` for local channels, with capacity and expiry.

    *capacity_of* gives a channel's capacity (the layer's ``get_capacity``); *clock* is the
    time base of expiry (``time.monotonic`` in one process, ``time.time`` for backends
    whose expiry times cross processes); *acknowledge*, if given, receives the ``ack``
    handles of entries once they have left the inbox (delivered or expired), on the loop of
    a :meth:`get` call.
    """

    __slots__ = (
        "_acknowledge",
        "_capacity_of",
        "_clock",
        "_expiry",
        "_getting",
        "_items",
        "_lock",
        "_pending",
        "_room_waiters",
        "_unacked",
        "_waiters",
        "room_wait",
    )

    def __init__(
        self,
        *,
        expiry: float,
        capacity_of: Callable[[str], int],
        clock: Callable[[], float] = time.monotonic,
        acknowledge: Acknowledge | None = None,
        room_wait: float = 1.0,
    ) -> None:
        self._expiry = expiry
        self._capacity_of = capacity_of
        self._clock = clock
        self._acknowledge = acknowledge
        #: Longest a sender waits in :meth:`wait_for_room` for the reader (seconds).
        self.room_wait = room_wait
        self._items: deque[Entry] = deque()
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()
        self._waiters: list[asyncio.Future[None]] = []
        self._room_waiters: list[asyncio.Future[None]] = []
        self._unacked: list[Any] = []
        self._getting = 0  # get() calls in progress: someone will drain the inbox

    def __len__(self) -> int:
        return len(self._items)

    def now(self) -> float:
        """The current time on the inbox's clock (what ``expires`` values are compared to)."""
        return self._clock()

    # -- putting --------------------------------------------------------------------------

    def has_room(self, channel: str) -> bool:
        """True if *channel* has fewer pending events than its capacity."""
        with self._lock:
            self._expire(self._clock())
            return self._pending.get(channel, 0) < self._capacity_of(channel)

    def pending(self, channel: str) -> int:
        """How many events wait for *channel* (in the queue or held by a demultiplexer)."""
        return self._pending.get(channel, 0)

    def offer(
        self,
        channels: Sequence[str],
        event: Event,
        *,
        expires: float | None = None,
        ack: Any = None,
    ) -> list[str]:
        """Queue *event* for those of *channels* with room; return the full ones.

        One entry is queued for all channels with room (none if all are full). *expires*
        is an absolute time on the inbox's clock (default: now plus the expiry).
        """
        with self._lock:
            now = self._clock()
            self._expire(now)
            pending = self._pending
            capacity_of = self._capacity_of
            room: list[str] = []
            full: list[str] = []
            for channel in channels:
                count = pending.get(channel, 0)
                if count < capacity_of(channel):
                    pending[channel] = count + 1
                    room.append(channel)
                else:
                    full.append(channel)
            waiters = self._append(now, expires, room, event, ack) if room else None
        if waiters:
            for waiter in waiters:
                wake(waiter)
        return full

    def _append(
        self, now: float, expires: float | None, channels: Sequence[str], event: Event, ack: Any
    ) -> list[asyncio.Future[None]]:
        # Holding the lock: queue the entry and take the waiters to wake. Every waiter is
        # woken: each looks again, and one whose call was cancelled leaves it to the others.
        self._items.append(
            (now + self._expiry if expires is None else expires, tuple(channels), event, ack)
        )
        waiters = self._waiters
        if waiters:
            self._waiters = []
        return waiters

    # -- getting --------------------------------------------------------------------------

    async def get(self) -> tuple[tuple[str, ...], Event]:
        """Wait for the next unexpired entry: ``(channels, event)``; its counts are released."""
        _, channels, event = await self.get_entry(hold=False)
        return channels, event

    async def get_entry(self, *, hold: bool = False) -> tuple[float, tuple[str, ...], Event]:
        """Wait for the next unexpired entry: ``(expires, channels, event)``.

        With *hold* the channels' counts are not released: the caller keeps the event
        counted against their capacity until it calls :meth:`release` for each channel
        (what :class:`~chanlite.layers.demux.LocalDemux` does until a consumer takes it).
        """
        self._getting += 1
        try:
            while True:
                with self._lock:
                    entry = self._pop_live(self._clock(), hold)
                    if entry is None:
                        waiter = asyncio.get_running_loop().create_future()
                        self._waiters.append(waiter)
                    acks = self._unacked
                    if acks:
                        self._unacked = []
                    rooms = self._take_room_waiters()
                if rooms:
                    for room in rooms:
                        wake(room)
                if acks and self._acknowledge is not None:
                    self._acknowledge(acks)
                if entry is not None:
                    return entry[0], entry[1], entry[2]
                try:
                    await waiter
                finally:
                    if not waiter.done():
                        with self._lock:
                            if waiter in self._waiters:
                                self._waiters.remove(waiter)
        finally:
            self._getting -= 1

    def release(self, channel: str) -> None:
        """Give back the count of one event held for *channel* (see ``get_entry(hold=True)``)."""
        with self._lock:
            self._release((channel,))
            rooms = self._take_room_waiters()
        for room in rooms:
            wake(room)

    def _pop_live(self, now: float, hold: bool) -> Entry | None:
        # Holding the lock: drop expired entries at the head, take the first live one.
        items = self._items
        while items:
            entry = items.popleft()
            if entry[3] is not None:
                self._unacked.append(entry[3])
            if entry[0] > now:
                if not hold:
                    self._release(entry[1])
                return entry
            self._release(entry[1])
        return None

    def _release(self, channels: Iterable[str]) -> None:
        pending = self._pending
        for channel in channels:
            left = pending.get(channel, 0) - 1
            if left > 0:
                pending[channel] = left
            else:
                pending.pop(channel, None)

    def _expire(self, now: float) -> None:
        # Holding the lock.
        items = self._items
        if items and items[0][0] <= now:
            while items and items[0][0] <= now:
                entry = items.popleft()
                self._release(entry[1])
                if entry[3] is not None:
                    self._unacked.append(entry[3])

    # -- backpressure ---------------------------------------------------------------------

    def reader_active(self) -> bool:
        """True while a :meth:`get` call is in progress with entries queued for it.

        Only then can waiting for room help: the reader will take entries and free
        capacity. With no reader (nothing calls ``receive_local``), or with everything
        already taken (and held by a slow consumer), a full channel stays full.
        """
        return self._getting > 0 and bool(self._items)

    async def wait_for_room(self, channels: Sequence[str], timeout: float | None = None) -> bool:
        """Wait until every one of *channels* has room, the reader stops, or *timeout*.

        Returns True if they all have room. Waits only while :meth:`reader_active`; the
        wait is bounded by *timeout* (default :attr:`room_wait`).
        """
        deadline = time.monotonic() + (self.room_wait if timeout is None else timeout)
        while True:
            with self._lock:
                self._expire(self._clock())
                pending = self._pending
                if all(pending.get(c, 0) < self._capacity_of(c) for c in channels):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or not self.reader_active():
                    return False
                room = asyncio.get_running_loop().create_future()
                self._room_waiters.append(room)
            try:
                await asyncio.wait_for(room, left)
            except asyncio.TimeoutError:
                return False
            finally:
                if not room.done():
                    with self._lock:
                        if room in self._room_waiters:
                            self._room_waiters.remove(room)

    def _take_room_waiters(self) -> list[asyncio.Future[None]]:
        rooms = self._room_waiters
        if rooms:
            self._room_waiters = []
        return rooms

    # -- housekeeping -----------------------------------------------------------------------

    def clear(self) -> None:
        """Forget every queued event and every count (``flush``)."""
        with self._lock:
            for entry in self._items:
                if entry[3] is not None:
                    self._unacked.append(entry[3])
            self._items.clear()
            self._pending.clear()
            rooms = self._take_room_waiters()
        for room in rooms:
            wake(room)
