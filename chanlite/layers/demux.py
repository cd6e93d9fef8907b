"""Per-channel ``receive()`` on top of a layer's :class:`~chanlite.layers.inbox.LocalInbox`.

chanlite's own reader takes ``receive_local()`` entries directly. Django Channels
consumers call ``receive(channel)`` for their own channel instead; :class:`LocalDemux`
serves them by sorting inbox entries into per-channel queues.

There is no reader task: a ``receive()`` call that finds nothing for its channel becomes
the *puller* (if no other call is) and takes entries from the inbox until one is for it,
sorting the others into their channels' queues and waking their receivers. So nothing is
bound to one event loop (a layer driven by ``async_to_sync`` gets a new loop per call),
and nothing is lost to a cancel: the inbox hands out an entry only to a call that sorts
it without awaiting again, and a cancelled puller hands the pulling to the next receiver.

The events sorted here still count against their channels' capacity until a consumer
takes them (the inbox is asked to *hold* them), so a consumer that stops reading fills
up as it would with the memory layer, and senders see ``ChannelFull``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from chanlite.layers.base import Event
from chanlite.layers.inbox import LocalInbox, wake
from chanlite.layers.streams import HISTORY_MISSED

ReceiveLocal = Callable[[], Awaitable[tuple[Sequence[str], Event]]]
Prepare = Callable[[], Awaitable[object]]

_NEVER = float("inf")


class LocalDemux:
    """Sorts local inbox entries into one queue per channel, for ``receive(channel)``.

    Give it the layer's :class:`LocalInbox` (and, if the backend must start something
    before the inbox fills, a *prepare* coroutine function run before each pull), or,
    for a layer without one, its ``receive_local`` method.
    """

    __slots__ = ("_clock", "_inbox", "_prepare", "_puller", "_queues", "_receive_local", "_waiters")

    def __init__(
        self, source: LocalInbox | ReceiveLocal, *, prepare: Prepare | None = None
    ) -> None:
        if isinstance(source, LocalInbox):
            self._inbox: LocalInbox | None = source
            self._receive_local: ReceiveLocal | None = None
        else:
            self._inbox = None
            self._receive_local = source
        self._prepare = prepare
        # channel -> [(expires, event)] sorted out of the inbox, not yet received.
        self._queues: dict[str, deque[tuple[float, Event]]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        # The call pulling from the inbox now: (its loop, a token only it holds).
        self._puller: tuple[asyncio.AbstractEventLoop, object] | None = None

    async def receive(self, channel: str) -> Event:
        """Wait for the next event for the local *channel*."""
        while True:
            event = self._pop(channel)
            if event is not None:
                return event
            loop = asyncio.get_running_loop()
            puller = self._puller
            if puller is None or puller[0].is_closed():
                await self._pull_for(channel, loop)
                continue
            waiter = loop.create_future()
            self._waiters.setdefault(channel, []).append(waiter)
            try:
                await waiter
            except BaseException:
                # Woken to take over the pulling, perhaps: hand it on before leaving.
                if self._puller is None:
                    self._wake_successor()
                raise
            finally:
                waiters = self._waiters.get(channel)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[channel]

    async def _pull_for(self, channel: str, loop: asyncio.AbstractEventLoop) -> None:
        """Take inbox entries and sort them until one is for *channel*."""
        token = object()
        self._puller = (loop, token)
        try:
            while channel not in self._queues:
                if self._prepare is not None:
                    await self._prepare()
                if self._inbox is not None:
                    expires, channels, event = await self._inbox.get_entry(hold=True)
                else:
                    assert self._receive_local is not None
                    got, event = await self._receive_local()
                    expires, channels = _NEVER, tuple(got)
                if event.get("type") == HISTORY_MISSED:
                    # A Channels consumer reads no history: the drop was counted and
                    # logged by the layer; the notice only gives its count back.
                    if self._inbox is not None:
                        for target in channels:
                            self._inbox.release(target)
                    continue
                for target in channels:
                    queue = self._queues.get(target)
                    if queue is None:
                        queue = self._queues[target] = deque()
                    queue.append((expires, event))
                    if target != channel:
                        self._wake(target)
        finally:
            puller = self._puller
            if puller is not None and puller[1] is token:
                self._puller = None
                self._wake_successor()

    def _wake_successor(self) -> None:
        # Receivers still waiting have nothing queued (those with events were woken):
        # wake one channel's, whose receiver then pulls for everyone.
        for target in self._waiters:
            self._wake(target)
            return

    def _wake(self, channel: str) -> None:
        waiters = self._waiters.pop(channel, None)
        if waiters:
            for waiter in waiters:
                wake(waiter)

    def _pop(self, channel: str) -> Event | None:
        queue = self._queues.get(channel)
        if queue is None:
            return None
        inbox = self._inbox
        now = inbox.now() if inbox is not None else 0.0
        while queue:
            expires, event = queue.popleft()
            if inbox is not None:
                inbox.release(channel)
            if expires > now:
                if not queue:
                    del self._queues[channel]
                return event
            if inbox is not None:  # expired while sorted out for a receiver: lost, counted
                inbox.expired += 1
        del self._queues[channel]
        return None

    def clear(self) -> None:
        """Forget every sorted event (``flush``; the inbox forgets its counts itself)."""
        self._queues.clear()

    async def close(self) -> None:
        """Forget sorted events and wake every waiting receiver (they then pull or wait)."""
        self._queues.clear()
        for channel in list(self._waiters):
            self._wake(channel)
