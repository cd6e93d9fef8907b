"""The local inbox: the per-process queue behind a layer's ``receive_local()``.

Every layer keeps what is addressed to its own channels (those made by ``new_channel()``)
in one :class:`LocalInbox`: group messages as *one* entry naming every local member,
direct sends as one entry naming one channel. The inbox does the bookkeeping every
backend needs and that is easy to get subtly wrong, so a backend only moves bytes:

* **capacity** -- :meth:`LocalInbox.offer` queues a message for the channels with room
  and returns the full ones. Counting every member of every group message would cost
  O(members) dict updates per message, so while fewer entries wait than the smallest
  capacity (no channel can be full then) nothing is counted; past that the counts are
  built from the queue and kept until it has drained to half that length;
* **expiry** -- entries are in arrival order, so expired ones sit at the head and are
  dropped there when the inbox is next touched (no timer, no scan);
* **the waiter** -- :meth:`LocalInbox.get` waits for the next entry;
* **draining** -- :meth:`LocalInbox.wait_drained` holds back a backend's reader that
  pulls from a shared store while the inbox is long, so a slow process leaves messages
  where their senders see the channels fill up;
* **missed history** -- a history message dropped for a full channel leaves a
  ``history.missed`` notice in its place (``offer(..., missed=True)``, :meth:`retry_full`,
  :meth:`mark_missed`; see :mod:`chanlite.layers.missed`), so the receiver reads it from the
  history as soon as it gets that far, in order.

Two guarantees hold for everything here, and the contract suite checks them per layer:

* **Loop-change safe.** Entries live in a plain deque, not in an ``asyncio.Queue``; a
  waiter is a future made by the call that waits, on the loop it runs on, and one whose
  loop has gone (``async_to_sync`` makes a loop per call, pytest-asyncio one per test) is
  skipped. A layer used from successive loops keeps every queued message.
* **Cancellation safe.** An entry is taken off the queue only by code that returns it
  without awaiting again; a waiter is only a wake-up, so a call cancelled after being
  woken has taken nothing, and the cancel is never swallowed.

A :class:`LocalInbox` is used by one thread at a time (successive loops in successive
threads are fine). A backend that puts entries from a thread of its own (a reader
thread, say) uses :class:`ThreadSafeInbox`, which holds a lock for the few lines of
bookkeeping of each call; waiters are woken on their own loops either way.

Backpressure: when a caller in this process fills a local member faster than the reader
drains the inbox (``group_send`` in a loop that never yields), :meth:`wait_for_room`
lets it wait, bounded, for the reader to make room before the layer counts a drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from chanlite.layers.base import Event
from chanlite.layers.missed import MissedNotices

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


def _wake_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        wake(future)


class LocalInbox:
    """FIFO of ``(channels, event)`` for local channels, with capacity and expiry.

    *capacity_of* gives a channel's capacity (the layer's ``get_capacity``) and
    *min_capacity* the smallest it can give (the layer's ``min_capacity()``; the default,
    1, counts always); *clock* is the time base of expiry (``time.monotonic`` in one
    process, ``time.time`` for backends whose expiry times cross processes);
    *acknowledge*, if given, receives the ``ack`` handles of entries once they have left
    the inbox (delivered or expired), on the loop of a :meth:`get` call; it must not call
    back into the inbox.
    """

    __slots__ = (
        "_acknowledge",
        "_appended",
        "_capacity_of",
        "_clock",
        "_counts",
        "_drained",
        "_expiry",
        "_floor",
        "_getting",
        "_held",
        "_held_total",
        "_items",
        "_missed",
        "_room_waiters",
        "_unacked",
        "_waiters",
        "expired",
        "room_wait",
        "taken",
        "waited",
    )

    def __init__(
        self,
        *,
        expiry: float,
        capacity_of: Callable[[str], int],
        min_capacity: int = 1,
        clock: Callable[[], float] = time.monotonic,
        acknowledge: Acknowledge | None = None,
        room_wait: float = 1.0,
    ) -> None:
        self._expiry = expiry
        self._capacity_of = capacity_of
        self._floor = max(1, min_capacity)
        self._clock = clock
        self._acknowledge = acknowledge
        #: Longest a sender waits in :meth:`wait_for_room` for the reader (seconds).
        self.room_wait = room_wait
        self._items: deque[Entry] = deque()
        # Entries ever queued (their numbers), and the open missed-history notices.
        self._appended = 0
        self._missed = MissedNotices()
        # Queued events per channel; None while fewer than _floor are outstanding
        # (queued plus held), when no channel can be full.
        self._counts: dict[str, int] | None = None
        # Events taken with get_entry(hold=True) and not released yet, per channel.
        self._held: dict[str, int] = {}
        self._held_total = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._room_waiters: list[asyncio.Future[None]] = []
        self._drained: list[tuple[int, asyncio.Future[None]]] = []
        self._unacked: list[Any] = []
        self._getting = 0  # get() calls waiting: someone will drain the inbox
        #: Deliveries lost to expiry: one per channel of each entry that expired unread.
        self.expired = 0
        #: Entries taken by readers, and the seconds they had waited, summed: from the
        #: send when the backend passed the send's ``expires``, else from the arrival here.
        self.taken = 0
        self.waited = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def now(self) -> float:
        """The current time on the inbox's clock (what ``expires`` values are compared to)."""
        return self._clock()

    # -- putting --------------------------------------------------------------------------

    def offer(
        self,
        channels: Sequence[str],
        event: Event,
        *,
        expires: float | None = None,
        ack: Any = None,
        force: bool = False,
        missed: bool = False,
    ) -> list[str]:
        """Queue *event* for those of *channels* with room; return the full ones.

        One entry is queued for all channels with room (none if all are full). *expires*
        is an absolute time on the inbox's clock (default: now plus the expiry). With
        *force* it is queued for every channel, full or not: for a message whose sender
        was already told it is stored (the backend enforced the capacity), which must
        not be lost now; it still counts against the channels. With *missed* (a group
        message that is not offered again: the full channels are its final drops), a
        history message leaves a ``history.missed`` notice for each full channel
        (:meth:`mark_missed`).
        """
        full: list[str] = []
        now = self._clock()
        items = self._items
        if items and items[0][0] <= now:
            self._expire(now)
        counts = self._counts
        room = channels if counts is None or force else self._split(counts, channels, full)
        if expires is None:
            expires = now + self._expiry
        if room:
            if self._missed:  # a drop was noticed and may be widened: not past this entry
                self._missed.queued(room, event, self._appended - len(items))
            self._append((expires, tuple(room), event, ack))
        if full and missed:
            self._mark_missed(full, event, expires)
        return full

    def _append(self, entry: Entry) -> None:
        items = self._items
        items.append(entry)
        self._appended += 1
        counts = self._counts
        if counts is not None:
            for channel in entry[1]:
                counts[channel] = counts.get(channel, 0) + 1
        elif len(items) + self._held_total >= self._floor:
            self._count_all()
        waiters = self._waiters
        if waiters:
            # Every waiter is woken: each looks again, and one whose call was
            # cancelled leaves the entry to the others.
            self._waiters = []
            _wake_all(waiters)

    def mark_missed(
        self, channels: Sequence[str], event: Event, *, expires: float | None = None
    ) -> None:
        """*event* was dropped for the full *channels* for good: if it is a history
        message, queue a ``history.missed`` notice for each of them in its place (or widen
        the one each has open), over their capacity; see :mod:`chanlite.layers.missed`."""
        self._mark_missed(
            channels, event, self._clock() + self._expiry if expires is None else expires
        )

    def _mark_missed(self, channels: Sequence[str], event: Event, expires: float) -> None:
        items = self._items
        gone = self._appended - len(items)
        for channel, notice in self._missed.missed(channels, event, self._appended, gone):
            self._append((expires, (channel,), notice, None))

    async def offer_waiting(
        self, channels: Sequence[str], event: Event, *, expires: float | None = None
    ) -> list[str]:
        """:meth:`offer`, then :meth:`retry_full` for the full channels: for ``group_send``."""
        full = self.offer(channels, event, expires=expires)
        if full:
            full = await self.retry_full(full, event, expires=expires)
        return full

    async def retry_full(
        self, full: list[str], event: Event, *, expires: float | None = None
    ) -> list[str]:
        """Offer *event* again to the *full* channels once this process's reader made room.

        A sender in this process that never yields fills its own members faster than the
        reader drains them: while :meth:`reader_active`, wait for room (bounded, see
        :meth:`wait_for_room`) before the caller counts the drops. Returns those still full.
        """
        if self.reader_active() and await self.wait_for_room(full):
            return self.offer(full, event, expires=expires, missed=True)
        self.mark_missed(full, event, expires=expires)
        return full

    def _split(self, counts: dict[str, int], channels: Sequence[str], full: list[str]) -> list[str]:
        # Counting: the channels with room; the others go to *full*.
        held = self._held
        capacity_of = self._capacity_of
        room: list[str] = []
        for channel in channels:
            count = counts.get(channel, 0)
            if held:
                count += held.get(channel, 0)
            if count < capacity_of(channel):
                room.append(channel)
            else:
                full.append(channel)
        return room

    def _count_all(self) -> None:
        # Start counting, from what is queued now.
        counts: dict[str, int] = {}
        for entry in self._items:
            for channel in entry[1]:
                counts[channel] = counts.get(channel, 0) + 1
        self._counts = counts

    # -- getting --------------------------------------------------------------------------

    async def get(self) -> tuple[tuple[str, ...], Event]:
        """Wait for the next unexpired entry: ``(channels, event)``; its counts are released."""
        entry = self._take(False)
        if entry is None:
            entry = await self._wait_take(False)
        return entry[1], entry[2]

    async def get_entry(self, *, hold: bool = False) -> tuple[float, tuple[str, ...], Event]:
        """Wait for the next unexpired entry: ``(expires, channels, event)``.

        With *hold* the channels' counts are not released: the caller keeps the event
        counted against their capacity until it calls :meth:`release` for each channel
        (what :class:`~chanlite.layers.demux.LocalDemux` does until a consumer takes it).
        """
        entry = self._take(hold)
        if entry is None:
            entry = await self._wait_take(hold)
        return entry[0], entry[1], entry[2]

    async def _wait_take(self, hold: bool) -> Entry:
        # Nothing was queued: wait for an offer, then look again (another call may have
        # taken the entry meanwhile, or this one may be cancelled having taken nothing).
        loop = asyncio.get_running_loop()
        self._getting += 1
        try:
            while True:
                waiter = loop.create_future()
                if self._park(waiter):
                    try:
                        await waiter
                    finally:
                        if not waiter.done():
                            self._unpark(waiter)
                entry = self._take(hold)
                if entry is not None:
                    return entry
        finally:
            self._getting -= 1

    def _park(self, waiter: asyncio.Future[None]) -> bool:
        """Make *waiter* wait for the next offer; False if an entry is queued already."""
        if self._items:
            return False
        self._waiters.append(waiter)
        return True

    def _unpark(self, future: asyncio.Future[None]) -> None:
        """Forget a waiter that stopped waiting (cancelled, timed out) before it was woken."""
        for waiting in (self._waiters, self._room_waiters):
            if future in waiting:
                waiting.remove(future)
        if any(waiting is future for _, waiting in self._drained):
            self._drained = [(low, w) for low, w in self._drained if w is not future]

    def _take(self, hold: bool) -> Entry | None:
        """The next live entry, off the queue, or None; settles what leaving entries owe."""
        items = self._items
        entry: Entry | None = None
        if items:
            now = self._clock()
            while items:
                head = items.popleft()
                if head[3] is None and self._counts is None and not hold:
                    if head[0] > now:  # the common case: nothing to count or acknowledge
                        entry = head
                        break
                    self.expired += len(head[1])
                    continue
                self._left(head, hold and head[0] > now)
                if head[0] > now:
                    entry = head
                    break
                self.expired += len(head[1])
            if entry is not None:
                self.taken += 1
                self.waited += now - entry[0] + self._expiry
        if self._unacked or self._room_waiters or self._drained:
            self._settle()
        return entry

    def _settle(self) -> None:
        # Entries left: acknowledge them, wake who waits for room or for a shorter queue.
        acks, self._unacked = self._unacked, []
        rooms, self._room_waiters = self._room_waiters, []
        _wake_all(rooms)
        length = len(self._items)
        drained = self._drained
        if drained and any(length < low for low, _ in drained):
            self._drained = []
            _wake_all([future for _, future in drained])
        if acks and self._acknowledge is not None:
            self._acknowledge(acks)

    def _left(self, entry: Entry, hold: bool) -> None:
        # *entry* has left the queue (taken, held, or expired): update the counts.
        if entry[3] is not None:
            self._unacked.append(entry[3])
        counts = self._counts
        if counts is not None:
            for channel in entry[1]:
                left = counts[channel] - 1
                if left:
                    counts[channel] = left
                else:
                    del counts[channel]
        if hold:
            held = self._held
            for channel in entry[1]:
                held[channel] = held.get(channel, 0) + 1
            self._held_total += len(entry[1])
            if counts is None and len(self._items) + self._held_total >= self._floor:
                self._count_all()  # held for many channels: one of them may be full now
        elif counts is not None and len(self._items) + self._held_total < self._floor // 2:
            self._counts = None

    def release(self, channel: str) -> None:
        """Give back the count of one event held for *channel* (see ``get_entry(hold=True)``)."""
        held = self._held
        left = held.get(channel, 0) - 1
        if left < 0:
            return  # forgotten by clear()
        if left:
            held[channel] = left
        else:
            del held[channel]
        self._held_total -= 1
        if self._counts is not None and len(self._items) + self._held_total < self._floor // 2:
            self._counts = None
        rooms, self._room_waiters = self._room_waiters, []
        _wake_all(rooms)

    def _expire(self, now: float) -> None:
        # Drop expired entries at the head.
        items = self._items
        while items and items[0][0] <= now:
            entry = items.popleft()
            self.expired += len(entry[1])
            self._left(entry, False)

    # -- backpressure ---------------------------------------------------------------------

    def reader_active(self) -> bool:
        """True while a :meth:`get` call is waiting and entries are queued for it.

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.room_wait if timeout is None else timeout)
        while True:
            room = loop.create_future()
            if self._has_room(channels, room):
                return True
            left = deadline - loop.time()
            if left <= 0 or not self.reader_active():
                self._unpark(room)
                return False
            try:
                await asyncio.wait_for(room, left)
            except asyncio.TimeoutError:
                return False
            finally:
                if not room.done():
                    self._unpark(room)

    def _has_room(self, channels: Sequence[str], room: asyncio.Future[None]) -> bool:
        """True if all *channels* have room; else *room* is woken when an entry leaves."""
        self._expire(self._clock())
        counts = self._counts
        full: list[str] = []
        if counts is not None:
            self._split(counts, channels, full)
        if not full:
            return True
        self._room_waiters.append(room)
        return False

    async def wait_drained(self, high: int, low: int) -> None:
        """Return at once if fewer than *high* entries wait; else once fewer than *low* do.

        For a backend's reader that moves messages from a shared store into the inbox:
        while this process's reader is behind, the messages stay in the store, where
        senders see the channels fill up. :meth:`clear` also ends the wait.
        """
        loop = asyncio.get_running_loop()
        while len(self._items) >= high:
            drained = loop.create_future()
            if not self._park_drained(high, low, drained):
                return
            try:
                await drained
            finally:
                if not drained.done():
                    self._unpark(drained)

    def _park_drained(self, high: int, low: int, drained: asyncio.Future[None]) -> bool:
        """Make *drained* wait for fewer than *low* entries; False if fewer than *high* wait."""
        if len(self._items) < high:
            return False
        self._drained.append((low, drained))
        return True

    # -- housekeeping -----------------------------------------------------------------------

    def clear(self) -> None:
        """Forget every queued event and every count (``flush``)."""
        for entry in self._items:
            if entry[3] is not None:
                self._unacked.append(entry[3])
        self._items.clear()
        self._missed.clear()
        self._counts = None
        self._held.clear()
        self._held_total = 0
        wakes = [*self._room_waiters, *(future for _, future in self._drained)]
        self._room_waiters = []
        self._drained = []
        _wake_all(wakes)


_I = TypeVar("_I", bound=LocalInbox)
P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[Concatenate[_I, P], R]) -> Callable[Concatenate[_I, P], R]:
    def locked(self: _I, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:  # type: ignore[attr-defined]
            return method(self, *args, **kwargs)

    functools.update_wrapper(locked, method)
    return locked


class ThreadSafeInbox(LocalInbox):
    """A :class:`LocalInbox` that entries may be offered to from any thread.

    For a backend with a thread of its own that delivers (a reader thread): every piece
    of bookkeeping runs under a lock, which a plain :class:`LocalInbox` (used from one
    thread at a time) does without. The *acknowledge* callback runs under it too.
    """

    __slots__ = ("_lock",)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._lock = threading.Lock()

    offer = _locked(LocalInbox.offer)
    mark_missed = _locked(LocalInbox.mark_missed)
    release = _locked(LocalInbox.release)
    clear = _locked(LocalInbox.clear)
    _take = _locked(LocalInbox._take)
    _park = _locked(LocalInbox._park)
    _unpark = _locked(LocalInbox._unpark)
    _has_room = _locked(LocalInbox._has_room)
    _park_drained = _locked(LocalInbox._park_drained)
