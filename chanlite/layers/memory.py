"""``memory://``: the in-process channel layer.

Costs are proportional to the work asked for, never to the number of channels:

* ``group_send`` touches only the group's members (Channels' in-memory layer scans every
  channel for expiry on each call, O(N^2) for a broadcast to N members), and all local
  members of a group message travel as *one* entry to :meth:`MemoryLayer.receive_local`.
* Expiry needs no global scan: each queue is in send order, so expired messages sit at
  its head and are popped there when the queue is next touched. Every channel of this
  layer is this process's, so each expired delivery, plain channels' too, is counted in
  ``local_inbox.expired``.

Messages are not copied: the receiver gets the very dict that was sent (a group message is
shared by its members), so do not mutate a message after sending it.

History and presence (:mod:`chanlite.layers.memory_streams`) live as long as the layer
object: its epoch is new each time one is made (or flushed).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from chanlite.layers.base import BaseLayer, ChannelFull, Message
from chanlite.layers.codec import MsgpackCodec
from chanlite.layers.demux import LocalDemux
from chanlite.layers.inbox import LocalInbox, wake
from chanlite.layers.memory_streams import MemoryStreams
from chanlite.layers.streams import HistoryPage, StreamPosition


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("use true or false")


class _Queue:
    """One plain channel's messages and the receivers waiting on it.

    A waiter is only a wake-up: the woken receiver takes the message off ``items`` itself,
    so a receiver cancelled after being woken takes nothing (it wakes the next one), and
    a waiter whose event loop has gone is simply skipped.
    """

    __slots__ = ("items", "waiters")

    def __init__(self) -> None:
        self.items: deque[tuple[float, Message]] = deque()
        self.waiters: deque[asyncio.Future[None]] = deque()

    def wake_one(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done() and not waiter.get_loop().is_closed():
                wake(waiter)
                return


class MemoryLayer(BaseLayer):
    """A channel layer inside one process: fast, and shared by nothing else."""

    extensions: ClassVar[list[str]] = ["groups", "flush", "history", "presence"]

    url_options: ClassVar[Mapping[str, Callable[[str], Any]]] = {
        **BaseLayer.url_options,
        "encodable_only": _bool,
    }

    def __init__(self, *, encodable_only: bool = True, **options: Any) -> None:
        super().__init__(**options)
        # What SQLite and Redis cannot carry is refused here too, with their message, so
        # an app that works on memory:// keeps working when a second worker needs a
        # shared layer. ``encodable_only=False`` (``memory://?encodable_only=false``)
        # accepts any object, knowingly.
        self.encodable_only = encodable_only
        self._check: Callable[[Message], None] | None = (
            MsgpackCodec().check if encodable_only else None
        )
        self._queues: dict[str, _Queue] = {}
        # group -> {channel: time joined}; dict order doubles as join order.
        self._groups: dict[str, dict[str, float]] = {}
        self.local_inbox = self._inbox = LocalInbox(
            expiry=self.expiry, capacity_of=self.get_capacity, min_capacity=self.min_capacity()
        )
        self._demux = LocalDemux(self._inbox)
        self._streams = MemoryStreams()

    # -- direct messages ------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Queue *message* on *channel*; raise :class:`ChannelFull` at capacity."""
        self.require_valid_message(message)
        check = self._check
        if check is not None:
            check(message)
        self.require_valid_channel_name(channel)
        if self.is_local(channel):
            if self._inbox.offer((channel,), message):
                raise ChannelFull(channel)
        elif not self._deliver(channel, message, time.monotonic()):
            raise ChannelFull(channel)

    async def receive(self, channel: str) -> Message:
        """Wait for the next message on *channel*."""
        self.require_valid_channel_name(channel, receive=True)
        if self.is_local(channel):
            return await self._demux.receive(channel)
        queue = self._queues.get(channel)
        if queue is None:
            queue = self._queues[channel] = _Queue()
        try:
            while True:
                now = time.monotonic()
                items = queue.items
                while items:
                    expires, message = items.popleft()
                    if expires > now:
                        if items:
                            queue.wake_one()  # more for the receivers behind this one
                        return message
                    self._inbox.expired += 1  # every channel of this layer is this process's
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                queue.waiters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    if waiter in queue.waiters:
                        queue.waiters.remove(waiter)
                    elif queue.items:
                        queue.wake_one()  # woken, but leaving: the message is another's
                    raise
        finally:
            self._forget_if_idle(channel, queue)

    async def receive_local(self) -> tuple[Sequence[str], Message]:
        """Wait for the next message for any channel made by :meth:`new_channel` here."""
        return await self._inbox.get()

    def _deliver(self, channel: str, message: Message, now: float) -> bool:
        """Queue one message for one plain channel; False if the channel is full."""
        queue = self._queues.get(channel)
        if queue is None:
            queue = self._queues[channel] = _Queue()
        items = queue.items
        while items and items[0][0] <= now:
            items.popleft()
            self._inbox.expired += 1
        if len(items) >= self.get_capacity(channel):
            return False
        items.append((now + self.expiry, message))
        if queue.waiters:
            queue.wake_one()
        return True

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
        await self.group_send_counted(group, message)

    async def group_send_counted(self, group: str, message: Message) -> int:
        """:meth:`group_send`, returning how many members *group* had."""
        self.require_valid_group_name(group)
        self.require_valid_message(message)
        check = self._check
        if check is not None:
            check(message)
        policy = self.history_policies.lookup(group)  # cached: one dict hit
        if policy is not None:
            message = self._streams.record(group, policy, message)
        return await self._fan_out(group, message)

    async def _fan_out(self, group: str, message: Message) -> int:
        members = self._groups.get(group)
        if not members:
            return 0
        now = time.monotonic()
        stale_before = now - self.group_expiry
        # Members join in time order, so expired memberships are at the front.
        for channel, joined in list(members.items()):
            if joined > stale_before:
                break
            del members[channel]
        local: list[str] = []
        dropped: list[str] = []
        for channel in members:
            if self.is_local(channel):
                local.append(channel)
            elif not self._deliver(channel, message, now):
                dropped.append(channel)
        if local:
            dropped += await self._inbox.offer_waiting(local, message)
        if dropped:
            self.count_drops(group, dropped, len(members))
        if not members and self._groups.get(group) is members:
            del self._groups[group]
        return len(members)

    # -- history and presence ------------------------------------------------------------

    async def history(
        self, group: str, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryPage:
        """The messages of history group *group* after *since* (see BaseLayer.history)."""
        policy = self.require_history(group)
        return self._streams.read(group, policy, since, limit)

    async def stream_position(self, group: str) -> StreamPosition:
        """The position of history group *group*."""
        self.require_history(group)
        return self._streams.position(group)

    async def presence_join(self, group: str, channel: str, key: str, meta: dict[str, Any]) -> None:
        """Announce *channel* in *group* as *key* with *meta*; its members get the diff."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        for diff in self._streams.join(group, channel, key, meta):
            await self._fan_out(group, diff)

    async def presence_leave(self, group: str, channel: str) -> None:
        """Remove *channel*'s presence in *group*; its members get the diff."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        for diff in self._streams.leave(group, channel):
            await self._fan_out(group, diff)

    async def presence(self, group: str) -> dict[str, list[dict[str, Any]]]:
        """key -> metas of *group*'s present channels."""
        self.require_valid_group_name(group)
        return self._streams.present(group)

    # -- lifecycle ----------------------------------------------------------------------

    async def flush(self) -> None:
        """Drop all messages and groups."""
        self._queues.clear()
        self._groups.clear()
        self._demux.clear()
        self._inbox.clear()
        self._streams.clear()

    async def close(self) -> None:
        """Stop the Channels-style receive helper; in-memory state needs no release."""
        await self._demux.close()
