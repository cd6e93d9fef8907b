"""The in-process queue behind ``receive_local()``.

Everything addressed to this process's own channels ends up here: group messages heard on
pub/sub (one entry naming every local member), direct sends made in this process, and
direct sends from other processes pulled from the inbox. Expiry is checked at the head,
as in the memory layer.

Capacity is per channel, but counting every member of every group message costs
O(members) dict updates per message. While the queue holds fewer entries than the
smallest capacity, no channel can be full, so nothing is counted ("fast mode"); once it
grows that long, the counts are built from the queue and kept until it has drained to
half that length.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence

from chanlite.layers.base import Message, release_pending

Entry = tuple[float, tuple[str, ...], Message]


class LocalQueue:
    """FIFO of ``(channels, message)`` with per-channel pending counts."""

    __slots__ = ("_capacity_of", "_drained", "_expiry", "_floor", "_items", "_pending", "_waiter")

    def __init__(self, expiry: float, capacity_of: Callable[[str], int], floor: int) -> None:
        """*floor* is the smallest capacity any channel can have."""
        self._expiry = expiry
        self._capacity_of = capacity_of
        self._floor = max(1, floor)
        self._items: deque[Entry] = deque()
        # Pending messages per channel; None in fast mode (fewer entries than _floor).
        self._pending: dict[str, int] | None = None
        # Futures, not asyncio.Event/Queue: those bind to the first loop that waits, and
        # the queue outlives loops (a loop that takes over keeps what is queued).
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def has_room(self, channel: str) -> bool:
        """True if *channel* has fewer pending messages than its capacity."""
        self._expire(time.monotonic())
        pending = self._pending
        if pending is None:
            return True
        return pending.get(channel, 0) < self._capacity_of(channel)

    def split_by_room(self, channels: Collection[str]) -> tuple[Sequence[str], Sequence[str]]:
        """Partition *channels* into those with room and those at capacity."""
        pending = self._pending
        if pending is None:
            return tuple(channels), ()
        self._expire(time.monotonic())
        room: list[str] = []
        full: list[str] = []
        for channel in channels:
            if pending.get(channel, 0) < self._capacity_of(channel):
                room.append(channel)
            else:
                full.append(channel)
        return room, full

    def put(self, channels: tuple[str, ...], message: Message) -> None:
        """Queue *message* for *channels* (capacity is the caller's business)."""
        if not channels:
            return
        items = self._items
        items.append((time.monotonic() + self._expiry, channels, message))
        pending = self._pending
        if pending is not None:
            for channel in channels:
                pending[channel] = pending.get(channel, 0) + 1
        elif len(items) >= self._floor:
            self._count_all()
        _wake(self._waiter)

    def _count_all(self) -> None:
        pending: dict[str, int] = {}
        for _, channels, _ in self._items:
            for channel in channels:
                pending[channel] = pending.get(channel, 0) + 1
        self._pending = pending

    async def get(self) -> tuple[tuple[str, ...], Message]:
        """Wait for the next unexpired entry."""
        while True:
            now = time.monotonic()
            items = self._items
            while items:
                expires, channels, message = self._pop()
                if expires > now:
                    return channels, message
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    async def wait_drained(self) -> None:
        """Return once fewer than HIGH_WATER entries wait (at once if so already)."""
        while len(self._items) >= HIGH_WATER:
            drained = self._drained = asyncio.get_running_loop().create_future()
            try:
                await drained
            finally:
                self._drained = None

    def clear(self) -> None:
        """Forget every queued message."""
        self._items.clear()
        self._pending = None
        _wake(self._drained)

    def _pop(self) -> Entry:
        items = self._items
        entry = items.popleft()
        pending = self._pending
        if pending is not None:
            if len(items) < self._floor // 2:
                self._pending = None
            else:
                release_pending(pending, entry[1])
        if len(items) < LOW_WATER:
            _wake(self._drained)
        return entry

    def _expire(self, now: float) -> None:
        items = self._items
        while items and items[0][0] <= now:
            self._pop()


def _wake(future: asyncio.Future[None] | None) -> None:
    # A future of a loop that has been closed meanwhile has nobody waiting on it.
    if future is not None and not future.done() and not future.get_loop().is_closed():
        future.set_result(None)


# Pull from the inbox only while fewer than LOW_WATER entries wait here, so a slow reader
# leaves messages in Redis, where senders see its channels fill up and get ChannelFull.
HIGH_WATER = 1024
LOW_WATER = 256
