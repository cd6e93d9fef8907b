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
joins groups, and buffers events in a bounded queue (``max_pending``). It follows the
same slow-consumer policy as a WebSocket's events (:mod:`chanlite.websocket`): when its
queue is full the hub's reader waits for the iterator to make room (holding back, through
the layer's capacity, senders in this process); if the iterator takes nothing for
:data:`chanlite.hub.ROOM_WAIT` seconds, the subscription is ended: what it still held is
dropped, the loss is counted (``app.stats.slow_consumers``, ``events_undeliverable``) and
logged once at WARNING, and the iterator (or :meth:`Subscription.receive`) raises
:class:`~chanlite.exceptions.SlowConsumer`. No event is dropped silently, and a stalled
reader never grows memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING

from chanlite.exceptions import SlowConsumer
from chanlite.hub import encoded_size
from chanlite.layers.base import Event, LayerUnavailable

if TYPE_CHECKING:
    from chanlite.hub import Hub

logger = logging.getLogger("chanlite.subscription")


class Subscription:
    """A channel with group memberships whose events are read by iteration."""

    frame_writer: Callable[[bytes], bool] | None = None  # events, never raw frames
    events_pending = False  # broadcasts may always go straight to push_event

    def __init__(self, hub: Hub, groups: tuple[str, ...], max_pending: int = 1000) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        self.hub = hub
        self.groups = groups
        self.max_pending = max_pending
        #: Events not delivered because the subscription was ended as a slow consumer.
        self.dropped = 0
        self.channel_name = ""
        self._events: deque[Event] = deque()
        self._ready: asyncio.Event = asyncio.Event()
        self._room: asyncio.Future[None] | None = None
        self._closed = False
        self._failure: SlowConsumer | None = None
        self._counted = False  # counted in hub.stats.subscriptions_open

    def push_event(self, event: Event) -> bool:
        """Called by the hub for each event (broadcasts included). False when the queue
        is full: the hub then waits in :meth:`wait_for_room`. Once ended as a slow
        consumer, every event is taken and counted as undeliverable."""
        if self._failure is not None or self._closed:
            self._undeliverable(1)
            return True
        if len(self._events) >= self.max_pending:
            return False
        self._events.append(event)
        self._ready.set()
        return True

    async def wait_for_room(self, timeout: float) -> None:
        """Wait until the reader takes an event; past *timeout* the slow-consumer policy
        ends the subscription."""
        while self._failure is None and not self._closed and len(self._events) >= self.max_pending:
            room = self._room = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(room, timeout)
            except asyncio.TimeoutError:
                self._slow_consumer(timeout)
                return
            finally:
                self._room = None

    def _slow_consumer(self, timeout: float) -> None:
        dropped = len(self._events)
        waiting = encoded_size(self._events)  # measured now, not per queued event
        self._events.clear()
        stats = self.hub.stats
        stats.slow_consumers += 1
        stats.slow_consumer_events += dropped
        stats.slow_consumer_bytes += waiting
        self.hub.slow_consumer("events", {}, self.channel_name, self.groups, waiting, dropped)
        self._undeliverable(dropped)
        self._failure = SlowConsumer(self.channel_name, dropped)
        logger.warning(
            "Ending subscription %s to %s: slow consumer (its reader took nothing for %g s "
            "with %d events, %d bytes waiting; they are dropped)",
            self.channel_name,
            ", ".join(self.groups) or "no group",
            timeout,
            dropped,
            waiting,
        )
        self._ready.set()  # the reader wakes up to its SlowConsumer

    def _undeliverable(self, count: int) -> None:
        self.dropped += count
        self.hub.stats.events_undeliverable += count

    def _took_one(self) -> None:
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    async def __aenter__(self) -> Subscription:
        self.hub.stats.subscriptions_open += 1
        self._counted = True
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
        if self._counted:
            self._counted = False
            self.hub.stats.subscriptions_open -= 1
        self._took_one()  # a hub waiting for room stops waiting
        self.hub.unregister(self.channel_name)
        for group in self.groups:
            try:
                await self.hub.group_discard(group, self.channel_name)
            except LayerUnavailable as exc:  # an outage: counted, logged once by the hub
                self.hub.layer_failed(exc)
            except Exception:
                logger.warning("Could not leave group %r", group, exc_info=True)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        """Events in arrival order; raises :class:`SlowConsumer` if the subscription was
        ended by the slow-consumer policy."""
        while not self._closed:
            if self._failure is not None:
                raise self._failure
            if self._events:
                event = self._events.popleft()
                self._took_one()
                yield event
                continue
            self._ready.clear()
            await self._ready.wait()

    async def receive(self, timeout: float | None = None) -> Event:
        """Wait for the next event (``asyncio.TimeoutError`` after *timeout* seconds;
        :class:`SlowConsumer` if the subscription was ended as a slow consumer)."""
        while not self._events:
            if self._failure is not None:
                raise self._failure
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), timeout)
        event = self._events.popleft()
        self._took_one()
        return event
