"""The hub: this process's link to the channel layer, one per :class:`~chanlite.App`.

It owns the layer (built lazily from its URL), the *single* ``receive_local()`` reader
that feeds every local connection, the channel names of those connections, the
background tasks the app spawns, and the counters of what was delivered. Connections
(:class:`~chanlite.websocket.WebSocket`, :class:`~chanlite.subscription.Subscription`)
and the blocking senders (:mod:`chanlite.sync`) talk to the hub, never to the App.

Connections get channel names lazily (only when they join a group or read
``ws.channel_name``), so adding connections adds no polling. A group event names every
local member at once: a broadcast frame (:mod:`chanlite.broadcast`) is then encoded once
and the same bytes are written to each member's transport when the server offers the
``chanlite.frames`` extension.

Backpressure: a connection takes at most :meth:`Hub.max_pending` events waiting for its
``on`` handlers. When one is full but its handler is still working through them, the
reader waits for room (so a sender in this process that never yields is held back by
the layer instead of overflowing anyone); a connection that cannot make room because its
client does not read is closed by the slow-consumer policy (:mod:`chanlite.closecodes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgpack  # type: ignore[import-untyped]

from chanlite.broadcast import BROADCAST, broadcast_event, encode_frame
from chanlite.layers.base import BaseLayer, Event, LayerError, LayerUnavailable
from chanlite.layers.errors import NotSupported
from chanlite.layers.registry import get_layer, layer_class
from chanlite.layers.streams import (
    HISTORY_MISSED,
    HistoryPage,
    HistoryPolicy,
    StreamPosition,
    check_pattern,
)

logger = logging.getLogger("chanlite.hub")

T = TypeVar("T")

#: The group and channel the start-up check discards (a no-op every backend must answer).
PROBE_GROUP = PROBE_CHANNEL = "chanlite.startup-check"

#: Where a layer URL is set, for the advice in a start-up failure.
LAYER_SOURCES = "App(layer=...), chanlite run --layer, CHANLITE_LAYER or CHANLITE['LAYER']"


class LayerCheckFailed(RuntimeError):
    """The start-up check could not use the channel layer; ``str()`` is one line naming
    the URL, the cause and what to do."""


#: Longest the reader waits for a full connection that is still handling its events
#: before the slow-consumer policy applies to it (seconds).
ROOM_WAIT = 1.0


class Receiver(Protocol):
    """What the hub delivers events to: a WebSocket, or a :class:`Subscription`."""

    @property
    def frame_writer(self) -> Callable[[bytes], bool] | None:
        """The server's raw frame writer for broadcasts, or None (events only)."""

    @property
    def events_pending(self) -> bool:
        """True while earlier events wait: a broadcast frame must then queue behind them."""

    def push_event(self, event: Event) -> bool:
        """Queue *event*; False when the receiver is full and the hub should wait."""

    async def wait_for_room(self, timeout: float) -> None:
        """Return once :meth:`push_event` will take an event (or the receiver gave up)."""


class HasHub(Protocol):
    """Anything that carries a hub (an :class:`~chanlite.App`)."""

    @property
    def hub(self) -> Hub: ...


@dataclass
class HubStats:
    """Counters an app can read (``app.stats``) to see what the hub did."""

    events_delivered: int = 0
    """Events handed to a local connection's queue."""
    events_unhandled: int = 0
    """Events with no ``on`` handler for their type (logged)."""
    events_undeliverable: int = 0
    """Events and frames for a connection that was gone or closing (logged at debug)."""
    broadcast_frames: int = 0
    """Broadcast frames written straight to a member's transport."""
    broadcast_bytes: int = 0
    """Bytes of those frames (headers included), counted once per broadcast."""
    slow_consumers: int = 0
    """Connections closed with 1013 because their client did not read."""
    layer_errors: int = 0
    """Failed ``receive_local()`` calls (the reader retries)."""
    events_replayed: int = 0
    """History events (and ``history.gap`` notices) delivered by joins from a position."""
    duplicates_skipped: int = 0
    """Live events a join from a position had already delivered from the history."""
    events_refetched: int = 0
    """Events of a history group the layer dropped for a connection whose channel was full,
    read from the history and handled in their place (and ``history.gap`` notices where
    the history no longer had them)."""
    sends: int = 0
    """Events sent to one channel through the layer (``send``)."""
    group_sends: int = 0
    """Events sent to a group through the layer (``group_send``)."""
    broadcasts: int = 0
    """Broadcasts sent through the layer (each becomes :attr:`broadcast_frames` writes)."""
    layer_send_seconds: float = 0.0
    """Time spent in the layer's ``send`` / ``group_send`` by the three above."""
    events_received: int = 0
    """Events (and broadcasts) the reader took from the layer."""
    slow_consumer_events: int = 0
    """Events that were waiting for connections closed as slow consumers (dropped)."""
    slow_consumer_bytes: int = 0
    """Bytes of those events, encoded as the layers carry them (see :func:`encoded_size`)."""
    subscriptions_open: int = 0
    """Open :meth:`~chanlite.App.subscribe` subscriptions (server-sent event streams)."""
    topic_connections_open: int = 0
    """Open topic connections (WebSocket and long-poll)."""

    @property
    def broadcast_dropped(self) -> int:
        """Always 0: a frame is delivered, or counted in :attr:`events_undeliverable`
        when its connection is closing, or its client is closed as a slow consumer."""
        return 0


@dataclass
class SlowConsumerReport:
    """One slow-consumer decision: who was closed, where, and what was waiting."""

    at: float
    """``time.time()`` of the decision."""
    kind: str
    """``"bytes"`` (the server's write buffer) or ``"events"`` (events for its handlers)."""
    peer: str
    """The client's address (``host:port``) or ``"-"``."""
    path: str
    """The connection's path."""
    channel: str | None
    """Its channel name, if it had one."""
    groups: list[str]
    """The groups it belonged to."""
    waiting: int
    """How many bytes were waiting: unread by its client (kind ``"bytes"``), or the
    events' size encoded as the layers carry them (kind ``"events"``)."""
    events: int | None = None
    """How many events were waiting (kind ``"events"``; None for kind ``"bytes"``)."""

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (JSON, msgpack) of the report."""
        return {
            "at": self.at,
            "kind": self.kind,
            "peer": self.peer,
            "path": self.path,
            "channel": self.channel,
            "groups": self.groups,
            "waiting": self.waiting,
            "events": self.events,
        }


def encoded_size(events: Iterable[Event]) -> int:
    """Bytes *events* take encoded as the layers carry them (msgpack): what a connection
    closed as a slow consumer left waiting. Measured once, when the policy decides, so
    queueing an event costs nothing; the queue it measures is bounded (``max_pending``).
    An event msgpack cannot pack (``memory://?encodable_only=false``) counts the length
    of its ``repr``."""
    total = 0
    for event in events:
        try:
            total += len(msgpack.packb(event, use_bin_type=True))
        except (TypeError, ValueError, OverflowError):
            total += len(repr(event).encode())
    return total


#: How many slow-consumer reports a hub keeps (the newest; counters keep the totals).
SLOW_CONSUMER_REPORTS = 20

#: The former name of :class:`HubStats`.
DispatchStats = HubStats


class Hub:
    """One process's link to a channel layer: its reader, its channels, its tasks."""

    def __init__(
        self, layer: str | BaseLayer | None = "memory://", *, max_pending_events: int | None = None
    ) -> None:
        if max_pending_events is not None and max_pending_events < 1:
            raise ValueError(f"max_pending_events must be at least 1, not {max_pending_events}")
        self._layer_url: str | None = layer if isinstance(layer, str) else None
        self._layer: BaseLayer | None = layer if isinstance(layer, BaseLayer) else None
        self._owns_layer = self._layer is None
        self.max_pending_events = max_pending_events
        self.connections: dict[str, Receiver] = {}
        self.stats = HubStats()
        #: The latest slow-consumer decisions (newest last), see :meth:`slow_consumer`.
        self.slow_consumer_reports: deque[SlowConsumerReport] = deque(maxlen=SLOW_CONSUMER_REPORTS)
        #: What the server this hub runs under offers (``chanlite.server.counters``), once
        #: the lifespan startup has told; None under a server without it.
        self.server_counters: Any = None
        self.started_at = time.time()
        #: Groups and presence groups of this process's connections: group -> channels
        #: (what ``chanlite inspect`` shows; kept on joins and leaves, not per message).
        self.local_groups: dict[str, set[str]] = {}
        self.local_presence: dict[str, set[str]] = {}
        self._counter = itertools.count(1)
        self._prefix: tuple[BaseLayer, str] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: History declared through the App, applied to every layer the hub uses.
        self.history_declared: dict[str, HistoryPolicy] = {}
        # (monotonic time the layer was first seen failing, failures since) during an outage,
        # and which paths ("reader", "calls") are failing: the outage ends when none is.
        self._outage: tuple[float, int] | None = None
        self._failing: set[str] = set()

    # -- the layer ----------------------------------------------------------------------

    @property
    def layer(self) -> BaseLayer:
        """The channel layer, built from its URL on first use."""
        layer = self._layer
        if layer is None:
            if self._layer_url is None:
                raise RuntimeError("This App has no channel layer (it was created with layer=None)")
            layer = get_layer(self._layer_url)
            self.apply_history(layer)
            self._layer = layer
        return layer

    def apply_history(self, layer: BaseLayer) -> None:
        """Declare this hub's history patterns on *layer* (one it did not build, say)."""
        for pattern, policy in self.history_declared.items():
            layer.keep_history(pattern, policy)

    def keep_history(self, pattern: str, policy: HistoryPolicy) -> None:
        """Keep history for the groups matching *pattern* on this hub's layer(s).

        Refused at once (:class:`~chanlite.layers.NotSupported` naming the layer class)
        when the layer, or the class its URL names, has no ``"history"`` extension.
        """
        check_pattern(pattern)
        if not isinstance(policy, HistoryPolicy):
            raise TypeError(f"policy must be a HistoryPolicy, not {type(policy).__name__}")
        if self._layer is not None:
            self._layer.keep_history(pattern, policy)
        elif self._layer_url is not None:
            self._require_history_class(self._layer_url)
        self.history_declared[pattern] = policy

    def _require_history_class(self, url: str) -> None:
        cls = layer_class(url.split("://", 1)[0].lower())
        if "history" not in cls.extensions:
            raise NotSupported(
                cls, "history", f"the layer {url!r} cannot keep history; use one that does"
            )

    @property
    def built_layer(self) -> BaseLayer | None:
        """The layer if it was built (or given), else None: reading it builds nothing."""
        return self._layer

    @property
    def has_layer(self) -> bool:
        """False for an App created with ``layer=None``."""
        return self._layer_url is not None or self._layer is not None

    @property
    def layer_url(self) -> str | None:
        """The layer URL, or None when the layer was given as an object (or disabled)."""
        return self._layer_url

    def configure_layer(self, layer: str | BaseLayer) -> None:
        """Replace the layer; a URL is validated now (a bad one fails at start-up)."""
        if isinstance(layer, str):
            self.apply_history(get_layer(layer))  # fails now on a layer without history
            self._layer_url, self._layer, self._owns_layer = layer, None, True
        else:
            self.apply_history(layer)
            self._layer_url, self._layer, self._owns_layer = None, layer, False

    def describe_layer(self) -> str:
        """The layer's URL, or its repr when it was given as an object."""
        return self._layer_url or repr(self._layer)

    async def check(self) -> None:
        """Build the layer and reach its backend once (start-up, before serving).

        A wrong scheme, a bad option, a server that is down or a file that cannot be
        written then stops start-up with one line, instead of failing every connection.
        Raises :class:`LayerCheckFailed`; does nothing for an App without a layer.
        """
        if self._layer_url is None and self._layer is None:
            return
        where = self.describe_layer()
        try:
            layer = self.layer
        except LayerError as exc:
            raise LayerCheckFailed(f"Channel layer {where} cannot be used: {exc}") from exc
        try:
            # Discarding a channel that is in no group touches the backend the way every
            # connection will (a connection, a write), and changes nothing.
            await layer.group_discard(PROBE_GROUP, PROBE_CHANNEL)
        except LayerUnavailable as exc:
            # A backend's own error names what is wrong and what to do about it.
            raise LayerCheckFailed(f"Channel layer {where} cannot be reached: {exc}") from exc
        except Exception as exc:
            raise LayerCheckFailed(
                f"Channel layer {where} cannot be reached: {_describe(exc)}. Start its "
                f"backend, or fix the URL where it is set ({LAYER_SOURCES})"
            ) from exc
        self.layer_ok()

    def layer_failed(self, exc: BaseException, path: str = "calls") -> None:
        """Count a failed layer call; the first of an outage is logged (one line, no
        traceback), the rest only at debug, so a layer that stays down does not fill the
        log with one traceback per connection. *path* is ``"reader"`` for the hub's
        reader, ``"calls"`` for sends and group changes."""
        self.stats.layer_errors += 1
        self._failing.add(path)
        outage = self._outage
        if outage is None:
            self._outage = (time.monotonic(), 1)
            logger.error(
                "Channel layer %s is unavailable: %s. Connections that need it are closed "
                "with 1011 until it recovers (logged once; --log-level debug shows each).",
                self.describe_layer(),
                _describe(exc),
                # A backend's own "unavailable" says it all; anything else is a surprise
                # whose traceback is worth one entry.
                exc_info=None if isinstance(exc, LayerUnavailable) else exc,
            )
        else:
            self._outage = (outage[0], outage[1] + 1)
            logger.debug("Channel layer call failed again: %s", _describe(exc))

    def layer_ok(self, path: str = "calls") -> None:
        """A layer call on *path* succeeded: once no path is failing, end the outage with
        one line saying so."""
        failing = self._failing
        failing.discard(path)
        outage = self._outage
        if outage is not None and not failing:
            self._outage = None
            logger.warning(
                "Channel layer %s is available again (after %.1f s and %d failed call%s)",
                self.describe_layer(),
                time.monotonic() - outage[0],
                outage[1],
                "" if outage[1] == 1 else "s",
            )

    @property
    def layer_down(self) -> bool:
        """True from a failed layer call until the next one that succeeds."""
        return self._outage is not None

    def max_pending(self, channel: str) -> int:
        """How many events *channel*'s connection may hold waiting for its handlers:
        the App's ``max_pending_events``, else the layer's capacity for the channel."""
        limit = self.max_pending_events
        return limit if limit is not None else self.layer.get_capacity(channel)

    def running_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the hub serves on (its reader is running there), else None.

        Blocking senders in other threads hand their calls to this loop.
        """
        reader = self._reader
        if reader is None or reader.done() or self._layer is None:
            return None
        return reader.get_loop()

    # -- sending --------------------------------------------------------------------------

    async def send(self, channel: str, event: Event) -> None:
        """Send *event* to one channel (a connection's ``on`` handlers), in any process."""
        began = time.perf_counter()
        await self.layer.send(channel, event)
        self.stats.sends += 1
        self._sent(began)

    async def group_send(self, group: str, event: Event) -> None:
        """Send *event* to every member of *group*."""
        began = time.perf_counter()
        await self.layer.group_send(group, event)
        self.stats.group_sends += 1
        self._sent(began)

    async def broadcast(
        self,
        group: str,
        *,
        text: str | None = None,
        bytes: bytes | None = None,
        json: Any = None,
        exclude: str | None = None,
    ) -> None:
        """Write one frame (exactly one of text/bytes/json) to every member socket of
        *group*, except the channel *exclude*."""
        event = broadcast_event(text=text, bytes=bytes, json=json, exclude=exclude)
        began = time.perf_counter()
        await self.layer.group_send(group, event)
        self.stats.broadcasts += 1
        self._sent(began)

    def _sent(self, began: float) -> None:
        # After a send the layer took: its time, and the end of an outage it was in.
        self.stats.layer_send_seconds += time.perf_counter() - began
        if self._outage is not None:
            self.layer_ok()

    # -- history and presence -------------------------------------------------------------

    async def history(
        self, group: str, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryPage:
        """Read history group *group* (see :meth:`chanlite.layers.BaseLayer.history`)."""
        return await self.layer.history(group, since, limit)

    async def stream_position(self, group: str) -> StreamPosition:
        """The position of history group *group*."""
        return await self.layer.stream_position(group)

    async def presence_join(self, group: str, channel: str, key: str, meta: dict[str, Any]) -> None:
        """Announce *channel* in *group* as *key* with *meta*."""
        await self.layer.presence_join(group, channel, key, meta)
        if channel in self.connections:
            self.local_presence.setdefault(group, set()).add(channel)

    async def presence_leave(self, group: str, channel: str) -> None:
        """Withdraw *channel*'s presence in *group*."""
        _forget(self.local_presence, group, channel)
        await self.layer.presence_leave(group, channel)

    async def presence(self, group: str) -> dict[str, list[dict[str, Any]]]:
        """Who is present in *group*: key -> metas (each with its ``"ref"``)."""
        return await self.layer.presence(group)

    async def group_add(self, group: str, channel: str) -> None:
        """Add *channel* to *group*."""
        await self.layer.group_add(group, channel)
        if channel in self.connections:
            self.local_groups.setdefault(group, set()).add(channel)
        if self._outage is not None:
            self.layer_ok()

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove *channel* from *group*."""
        _forget(self.local_groups, group, channel)
        await self.layer.group_discard(group, channel)
        if self._outage is not None:
            self.layer_ok()

    # -- channels ---------------------------------------------------------------------------

    def register(self, receiver: Receiver) -> str:
        """Give *receiver* a channel name local to this process and start reading."""
        layer = self.layer
        prefix = self._prefix
        if prefix is None or prefix[0] is not layer:
            # A new layer (the App served again) has a new client_id: names follow it.
            prefix = self._prefix = (layer, f"ws.{layer.client_id}!")
        name = f"{prefix[1]}{next(self._counter)}"
        self.connections[name] = receiver
        self.start()
        return name

    def unregister(self, name: str) -> None:
        """Forget a channel: events for it are counted as undeliverable from now on."""
        self.connections.pop(name, None)

    def slow_consumer(
        self,
        kind: str,
        scope: Mapping[str, Any],
        channel: str | None,
        groups: Sequence[str],
        waiting: int,
        events: int | None = None,
    ) -> SlowConsumerReport:
        """Record one slow-consumer decision (counted by the caller): kept among the
        latest :data:`SLOW_CONSUMER_REPORTS` for ``chanlite inspect``. *waiting* is in
        bytes; *events* counts the events among them (kind ``"events"``)."""
        client = scope.get("client")
        report = SlowConsumerReport(
            at=time.time(),
            kind=kind,
            peer=f"{client[0]}:{client[1]}" if client else "-",
            path=str(scope.get("path", "")),
            channel=channel,
            groups=sorted(groups),
            waiting=waiting,
            events=events,
        )
        self.slow_consumer_reports.append(report)
        return report

    # -- background tasks -----------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run *coro* as a background task the hub keeps a reference to and logs on failure."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """The background tasks started with :meth:`spawn` that are still running."""
        return frozenset(self._tasks)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Background task failed", exc_info=task.exception())

    # -- the reader -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader on the running loop, once."""
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def aclose(self) -> None:
        """Stop the reader and the background tasks; close the layer if the hub built it."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._layer is not None and self._owns_layer:
            layer, self._layer = self._layer, None
            await layer.close()

    async def _read(self) -> None:
        layer = self.layer
        delay = 0.05
        while True:
            try:
                channels, event = await layer.receive_local()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A layer outage must not kill the reader: back off and try again. The
                # outage is logged once (and once when it ends), not per attempt.
                self.layer_failed(exc, "reader")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if self._outage is not None:
                self.layer_ok("reader")
            self.stats.events_received += 1
            delay = 0.05
            try:
                full = self.deliver(channels, event)
            except Exception:  # never let one bad event stop delivery to everyone
                logger.exception("Delivering a %r event failed", event.get("type"))
                continue
            if full:
                await self._wait_for_room(full, event)

    async def _wait_for_room(self, full: list[Receiver], event: Event) -> None:
        # Connections whose handlers are behind but still working: hold the reader (and
        # so, through the layer's capacity, the senders) until each has room again.
        for receiver in full:
            await receiver.wait_for_room(ROOM_WAIT)
            # Room now, or the receiver gave up on its client and drops what it is given.
            receiver.push_event(event)

    def deliver(self, channels: Sequence[str], event: Event) -> list[Receiver] | None:
        """Hand *event* to the connections behind *channels* (no awaiting, no copies).

        Returns the receivers that were full (the event is not queued for them yet), or
        None.
        """
        kind = event.get("type")
        if kind == BROADCAST:
            return self._broadcast(channels, event)
        if kind == HISTORY_MISSED:
            return self._missed(channels, event)
        connections = self.connections
        stats = self.stats
        full: list[Receiver] | None = None
        for channel in channels:
            receiver = connections.get(channel)
            if receiver is None:
                stats.events_undeliverable += 1
                logger.debug("No local connection for %r; event dropped", channel)
                continue
            stats.events_delivered += 1
            if not receiver.push_event(event):
                if full is None:
                    full = []
                full.append(receiver)
        return full

    def _missed(self, channels: Sequence[str], event: Event) -> list[Receiver] | None:
        # The layer dropped history messages for these (full) channels and left a notice
        # in their place: a receiver that reads them back from the history (a WebSocket)
        # gets it in its queue, in order; for any other the layer's drop count stands.
        full: list[Receiver] | None = None
        for channel in channels:
            receiver = self.connections.get(channel)
            if receiver is None or not getattr(receiver, "reads_missed", False):
                logger.debug("Missed %r messages for %r not read back", event.get("group"), channel)
                continue
            if not receiver.push_event(event):
                full = [*(full or ()), receiver]
        return full

    def _broadcast(self, channels: Sequence[str], event: Event) -> list[Receiver] | None:
        frame: bytes | None = None
        stats = self.stats
        connections = self.connections
        full: list[Receiver] | None = None
        exclude = event.get("exclude")
        # Counted once per broadcast, not per member: the server does not count the
        # frames its send_frame queues (the per-member path is the hot one).
        written = 0
        for channel in channels:
            if channel == exclude:
                continue  # the sender's own socket (broadcast_from)
            receiver = connections.get(channel)
            if receiver is None:
                stats.events_undeliverable += 1
                logger.debug("No local connection for %r; broadcast frame dropped", channel)
                continue
            writer = receiver.frame_writer
            if writer is None or receiver.events_pending:
                # No raw transport (a foreign server), or earlier events still queued:
                # go through the connection's ordered queue.
                if not receiver.push_event(event):
                    if full is None:
                        full = []
                    full.append(receiver)
                continue
            if frame is None:
                frame = encode_frame(event)
            if writer(frame):
                written += 1
            else:
                # The server refuses only a socket that is closing or closed.
                stats.events_undeliverable += 1
                logger.debug("Broadcast frame for %r refused: its socket is closing", channel)
        if frame is not None and written:
            stats.broadcast_frames += written
            stats.broadcast_bytes += written * len(frame)
        return full


def _forget(members: dict[str, set[str]], group: str, channel: str) -> None:
    channels = members.get(group)
    if channels is not None:
        channels.discard(channel)
        if not channels:
            del members[group]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
