"""Layer events for code that is not a WebSocket handler: SSE streams, background tasks.

::

    @app.http("/events")
    async def events(request):
        async def stream():
            async with app.subscribe("ticks") as subscription:
                async for event in subscription:
                    yield f"data: {json.dumps(event['n'])}\\n\\n"
        return StreamingResponse(stream(), media_type="text/event-stream")

A subscription is one more receiver of the process's hub: it gets a channel name,
joins groups, and buffers events in a bounded queue (oldest dropped and counted when a
slow consumer falls behind, so a stalled reader never grows memory without bound).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING

from chanlite.layers.base import Event

if TYPE_CHECKING:
    from chanlite.hub import Hub

logger = logging.getLogger("chanlite.subscription")


class Subscription:
    """A channel with group memberships whose events are read by iteration."""

    frame_writer: Callable[[bytes], bool] | None = None  # events, never raw frames
    events_pending = False  # broadcasts may always go straight to push_event

    def __init__(self, hub: Hub, groups: tuple[str, ...], max_pending: int = 1000) -> None:
        self.hub = hub
        self.groups = groups
        self.max_pending = max_pending
        #: Events dropped because the reader fell more than ``max_pending`` behind.
        self.dropped = 0
        self.channel_name = ""
        self._events: deque[Event] = deque()
        self._ready: asyncio.Event = asyncio.Event()
        self._closed = False

    def push_event(self, event: Event) -> bool:
        """Called by the hub for each event (including broadcast frames); always taken."""
        if len(self._events) >= self.max_pending:
            self._events.popleft()
            self.dropped += 1
            logger.warning("Subscription %s is behind; oldest event dropped", self.channel_name)
        self._events.append(event)
        self._ready.set()
        return True

    async def wait_for_room(self, timeout: float) -> None:
        """Never needed: :meth:`push_event` always takes the event (the oldest may go)."""

    async def __aenter__(self) -> Subscription:
        self.channel_name = self.hub.register(self)
        for group in self.groups:
            await self.hub.group_add(group, self.channel_name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        self.hub.unregister(self.channel_name)
        for group in self.groups:
            try:
                await self.hub.group_discard(group, self.channel_name)
            except Exception:
                logger.warning("Could not leave group %r", group, exc_info=True)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while not self._closed:
            while self._events:
                yield self._events.popleft()
            self._ready.clear()
            await self._ready.wait()

    async def receive(self, timeout: float | None = None) -> Event:
        """Wait for the next event (``asyncio.TimeoutError`` after *timeout* seconds)."""
        while not self._events:
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self._events.popleft()
