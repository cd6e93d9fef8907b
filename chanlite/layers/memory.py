"""``memory://``: the in-process channel layer.

Costs are proportional to the work asked for, never to the number of channels:

* ``group_send`` touches only the group's members (Channels' in-memory layer scans every
  channel for expiry on each call, O(N^2) for a broadcast to N members), and all local
  members of a group message travel as *one* entry to :meth:`MemoryLayer.receive_local`.
* Expiry needs no global scan: each queue is in send order, so expired messages sit at
  its head and are popped there when the queue is next touched.

Messages are not copied: the receiver gets the very dict that was sent (a group message is
shared by its members), so do not mutate a message after sending it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from chanlite.layers.base import BaseLayer, ChannelFull, Message, release_pending
from chanlite.layers.demux import LocalDemux


class _Queue:
    """One channel's messages and the receivers waiting on it."""

    __slots__ = ("items", "waiters")

    def __init__(self) -> None:
        self.items: deque[tuple[float, Message]] = deque()
        self.waiters: deque[asyncio.Future[Message]] = deque()


class MemoryLayer(BaseLayer):
    """A channel layer inside one process: fast, and shared by nothing else."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._queues: dict[str, _Queue] = {}
        # group -> {channel: time joined}; dict order doubles as join order.
        self._groups: dict[str, dict[str, float]] = {}
        # Local channels share one queue: (expires, channels, message).
        self._local: deque[tuple[float, tuple[str, ...], Message]] = deque()
        self._local_pending: dict[str, int] = {}
        self._local_waiter: asyncio.Future[None] | None = None
        self._demux = LocalDemux(self.receive_local)

    # -- direct messages ------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Queue *message* on *channel*; raise :class:`ChannelFull` at capacity."""
        self.require_valid_message(message)
        self.require_valid_channel_name(channel)
        if not self._deliver(channel, message, time.monotonic()):
            raise ChannelFull(channel)

    async def receive(self, channel: str) -> Message:
        """Wait for the next message on *channel*."""
        self.require_valid_channel_name(channel, receive=True)
        if self.is_local(channel):
            return await self._demux.receive(channel)
        queue = self._queues.get(channel)
        if queue is None:
            queue = self._queues[channel] = _Queue()
        now = time.monotonic()
        items = queue.items
        while items:
            expires, message = items.popleft()
            if expires > now:
                self._forget_if_idle(channel, queue)
                return message
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        queue.waiters.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Handed a message and cancelled before resuming: put it back, unlost.
                queue.items.appendleft((time.monotonic() + self.expiry, future.result()))
            elif future in queue.waiters:
                queue.waiters.remove(future)
            raise
        finally:
            self._forget_if_idle(channel, queue)

    async def receive_local(self) -> tuple[Sequence[str], Message]:
        """Wait for the next message for any channel made by :meth:`new_channel` here."""
        while True:
            self._expire_local(time.monotonic())
            if self._local:
                _, channels, message = self._pop_local()
                return channels, message
            waiter = self._local_waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._local_waiter = None

    def _deliver(self, channel: str, message: Message, now: float) -> bool:
        """Queue one message for one channel; False if the channel is full."""
        if self.is_local(channel):
            return self._deliver_local((channel,), message, now)
        queue = self._queues.get(channel)
        if queue is None:
            queue = self._queues[channel] = _Queue()
        while queue.waiters:
            waiter = queue.waiters.popleft()
            if not waiter.done():
                waiter.set_result(message)
                return True
        items = queue.items
        while items and items[0][0] <= now:
            items.popleft()
        if len(items) >= self.get_capacity(channel):
            return False
        items.append((now + self.expiry, message))
        return True

    def _deliver_local(self, channels: tuple[str, ...], message: Message, now: float) -> bool:
        if not channels:
            return True
        self._expire_local(now)
        pending = self._local_pending
        if len(channels) == 1 and pending.get(channels[0], 0) >= self.get_capacity(channels[0]):
            return False
        for channel in channels:
            pending[channel] = pending.get(channel, 0) + 1
        self._local.append((now + self.expiry, channels, message))
        waiter = self._local_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def _pop_local(self) -> tuple[float, tuple[str, ...], Message]:
        """Take the oldest local entry off the queue and release its capacity."""
        entry = self._local.popleft()
        release_pending(self._local_pending, entry[1])
        return entry

    def _expire_local(self, now: float) -> None:
        local = self._local
        while local and local[0][0] <= now:
            self._pop_local()

    def _forget_if_idle(self, channel: str, queue: _Queue) -> None:
        if not queue.items and not queue.waiters and self._queues.get(channel) is queue:
            del self._queues[channel]

    # -- groups -----------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add *channel* to *group*, refreshing its membership time."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        members = self._groups.setdefault(group, {})
        members.pop(channel, None)
        members[channel] = time.monotonic()

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove *channel* from *group* if it is a member."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        members = self._groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self._groups[group]

    async def group_send(self, group: str, message: Message) -> None:
        """Deliver *message* to each member; full members are dropped and counted."""
        self.require_valid_group_name(group)
        self.require_valid_message(message)
        members = self._groups.get(group)
        if not members:
            return
        now = time.monotonic()
        stale_before = now - self.group_expiry
        # Members join in time order, so expired memberships are at the front.
        for channel, joined in list(members.items()):
            if joined > stale_before:
                break
            del members[channel]
        local: list[str] = []
        pending = self._local_pending
        if self._local:
            self._expire_local(now)
        for channel in members:
            if self.is_local(channel):
                if pending.get(channel, 0) >= self.get_capacity(channel):
                    self.count_drop(group, channel)
                else:
                    local.append(channel)
            elif not self._deliver(channel, message, now):
                self.count_drop(group, channel)
        if local:
            self._deliver_local(tuple(local), message, now)
        if not members:
            del self._groups[group]

    # -- lifecycle ----------------------------------------------------------------------

    async def flush(self) -> None:
        """Drop all messages and groups."""
        self._queues.clear()
        self._groups.clear()
        self._local.clear()
        self._local_pending.clear()

    async def close(self) -> None:
        """Stop the Channels-style receive helper; in-memory state needs no release."""
        await self._demux.close()
