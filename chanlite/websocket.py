"""The WebSocket connection object handed to a handler: one per socket.

It is the ASGI exchange (:class:`~chanlite.asgi_websocket.ASGIWebSocket`: the state
machine and the typed helpers) plus the connection's place on the channel layer. The
connection dispatches its own layer events, as a Channels consumer does: events for it
(``@handler.on("type")``) are queued in arrival order and run by a short-lived drain task
that exists only while events are pending, so an idle connection costs no task, no timer
and no queue. It knows the process's :class:`~chanlite.hub.Hub` (its link to the layer),
never the App; it runs its handler and cleans up after it (:meth:`WebSocket.run_handler`).

Groups that keep history (:meth:`chanlite.App.history`) can be joined from a position
(``await ws.join(group, since=StreamPosition(n, epoch))``): the connection gets exactly
the messages after it, then the live ones, none twice (:mod:`chanlite.resume`). Joining
with ``presence=(key, meta)`` announces the connection in the group; the ``on`` handlers
``presence.join`` / ``presence.leave`` then hear of keys arriving and leaving.

The queue of events waiting for a handler is bounded (``App(max_pending_events=...)``,
by default the layer's capacity for the channel). A handler that is behind holds the
hub's reader back (bounded); a client that does not read while the queue is full gets the
slow-consumer policy: closed with 1013 "slow consumer", counted in
``stats.slow_consumers`` and logged once at WARNING with its address; its queue is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from chanlite.asgi_websocket import ASGIWebSocket, WebSocketState, peer
from chanlite.broadcast import BROADCAST
from chanlite.closecodes import LAYER_UNAVAILABLE, SLOW_CONSUMER, CloseCode
from chanlite.eventtypes import unhandled_hint
from chanlite.exceptions import RAISE_EXCEPTIONS, WebSocketDisconnect, WebSocketStateError
from chanlite.hub import encoded_size
from chanlite.layers.base import Event, LayerUnavailable
from chanlite.layers.errors import LayerError, NotSupported
from chanlite.layers.streams import (
    HISTORY_MISSED,
    PRESENCE_DIFF,
    HistoryGap,
    HistoryPage,
    PresenceError,
    StreamPosition,
    check_limit,
    check_position,
)
from chanlite.presence import key_events
from chanlite.resume import DUPLICATE, PASS, StreamGaps, StreamJoins, gap_event, lost_event
from chanlite.types import Receive, Scope, Send

if TYPE_CHECKING:
    from chanlite.hub import HasHub, Hub

__all__ = ["ConnectionHandler", "EventHandler", "WebSocket", "WebSocketState"]

logger = logging.getLogger("chanlite.websocket")

EventHandler = Callable[["WebSocket", Event], Awaitable[None]]
"""An ``on`` handler: ``async def handler(ws, event)``."""


class ConnectionHandler(Protocol):
    """What runs a connection: called once with the socket, with ``on`` handlers by type
    (:class:`~chanlite.endpoints.WebSocketHandler` is one)."""

    @property
    def events(self) -> Mapping[str, EventHandler]:
        """The ``on`` handlers, by event type."""

    def __call__(self, ws: WebSocket, /, **path_params: Any) -> Awaitable[None]:
        """Run the connection's handler."""


class WebSocket(ASGIWebSocket):
    """A WebSocket connection: accept, send, receive, join groups, get layer events."""

    #: The hub hands it the layer's ``history.missed`` notices: it reads them back.
    reads_missed = True

    __slots__ = (
        "_channel_name",
        "_drain",
        "_events",
        "_gaps",
        "_groups",
        "_handler",
        "_hub",
        "_joins",
        "_max_pending",
        "_presence",
        "_room",
        "_slow",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        hub: Hub | None = None,
        handler: ConnectionHandler | None = None,
        app: HasHub | None = None,
    ) -> None:
        super().__init__(scope, receive, send)
        if app is not None:
            import warnings

            warnings.warn(
                "WebSocket(app=...) is deprecated; pass hub=app.hub",
                DeprecationWarning,
                stacklevel=2,
            )
            if hub is None:
                hub = app.hub
        self._hub = hub
        self._handler = handler
        self._channel_name: str | None = None
        self._groups: set[str] | None = None
        self._events: deque[Event] | None = None
        self._drain: asyncio.Task[None] | None = None
        # Set with the channel name (no event arrives before it has one).
        self._max_pending = 100
        self._room: asyncio.Future[None] | None = None
        self._slow = False
        self._joins: StreamJoins | None = None
        self._gaps: StreamGaps | None = None
        self._presence: set[str] | None = None

    def _json_default(self) -> Callable[[Any], Any]:
        # The App's hook (App(json_default=...)), else the built-in one.
        hook = getattr(self.scope.get("app"), "json_default", None)
        return hook if hook is not None else super()._json_default()

    # -- the channel layer ---------------------------------------------------------------

    @property
    def hub(self) -> Hub:
        """The process's link to the channel layer (``app.hub``)."""
        hub = self._hub
        if hub is None:
            raise WebSocketStateError("This WebSocket is not attached to a chanlite App")
        return hub

    @property
    def app(self) -> Any:
        """The application serving this connection (``scope["app"]``)."""
        try:
            return self.scope["app"]
        except KeyError:
            raise WebSocketStateError("This WebSocket is not attached to a chanlite App") from None

    @property
    def channel_name(self) -> str:
        """This connection's channel: ``await app.send(ws.channel_name, event)`` reaches it."""
        name = self._channel_name
        if name is None:
            hub = self.hub
            name = self._channel_name = hub.register(self)
            self._max_pending = hub.max_pending(name)
        return name

    @property
    def user(self) -> Any:
        """The authenticated user, set by an auth middleware (e.g. chanlite.contrib.django)."""
        try:
            return self.scope["user"]
        except KeyError:
            raise WebSocketStateError(
                "ws.user needs an auth middleware that sets scope['user'] "
                "(with Django: serve the app through chanlite.contrib.django)."
            ) from None

    @property
    def session(self) -> Any:
        """The session, set by a session middleware (e.g. chanlite.contrib.django)."""
        try:
            return self.scope["session"]
        except KeyError:
            raise WebSocketStateError(
                "ws.session needs a session middleware that sets scope['session'] "
                "(with Django: serve the app through chanlite.contrib.django)."
            ) from None

    @property
    def groups(self) -> frozenset[str]:
        """The groups this connection has joined."""
        return frozenset(self._groups or ())

    async def join(
        self,
        group: str,
        since: StreamPosition | None = None,
        *,
        last: int | None = None,
        presence: tuple[str, dict[str, Any]] | None = None,
    ) -> StreamPosition | None:
        """Join *group*: its events and broadcasts reach this connection until it ends.

        For a group that keeps history (``App.history``):

        * *since* -- a position the client saw last (``offset``/``epoch`` of its last
          event): the messages after it are delivered first, in order, then the live
          ones, none twice and none missing. If that history cannot be served exactly,
          a ``{"type": "history.gap", "group", "reason", "offset", "epoch"}`` event is
          delivered instead (reason ``"epoch"``, ``"too_old"`` or ``"future"``; give it
          an ``on("history.gap")`` handler that tells the client to reload), followed by
          the newest *last* messages if *last* is given, then the live ones.
        * *last* alone -- deliver the newest *last* retained messages first (a latecomer
          sees the conversation so far).

        Returns the group's position after what was delivered (None for a plain join).
        Events of a history group carry ``"offset"``, ``"epoch"`` and ``"group"``. Those
        the layer drops for this connection while its channel is full (counted and logged
        by the layer), broadcast frames included, are read from the history and handled in
        their place, in order, as soon as the connection has worked through what came
        before them (see :meth:`handle_event`).

        *presence* ``(key, meta)`` announces this connection in the group (one entry per
        key, several connections of one key share it); it is withdrawn when the
        connection leaves the group or ends. Raises
        :class:`~chanlite.layers.HistoryError` (a bad position, a group without
        history), :class:`~chanlite.layers.PresenceError` (bad presence info) or
        :class:`~chanlite.layers.NotSupported` (the layer lacks the capability) before
        joining anything.
        """
        hub = self.hub
        replay = since is not None or last is not None
        try:
            if replay:
                layer = hub.layer
                if "history" not in layer.extensions:
                    raise NotSupported(layer, "history", f"cannot join {group!r} from a position")
                if since is not None:
                    check_position(since)
                check_limit(last)
                layer.require_history(group)
            if presence is not None:
                presence = _presence_arg(presence)
                layer = hub.layer
                if "presence" not in layer.extensions:
                    raise NotSupported(
                        layer, "presence", f"cannot announce a presence in {group!r}"
                    )
        except (LayerError, TypeError) as exc:
            logger.debug("Refused to join %r for %s: %s", group, peer(self.scope), exc)
            raise
        channel = self.channel_name
        position: StreamPosition | None = None
        if replay:
            position = await self._join_from(group, since, last)
        else:
            await hub.group_add(group, channel)
            self._add_group(group)
        if presence is not None:
            try:
                await hub.presence_join(group, channel, presence[0], presence[1])
            except BaseException as exc:
                if isinstance(exc, LayerError):  # e.g. PresenceError: meta too large
                    logger.debug("Refused presence in %r for %s: %s", group, peer(self.scope), exc)
                await self.leave(group)
                raise
            if self._presence is None:
                self._presence = set()
            self._presence.add(group)
        return position

    def _add_group(self, group: str) -> None:
        if self._groups is None:
            self._groups = set()
        self._groups.add(group)
        if self._gaps is None:
            self._gaps = StreamGaps()
        self._gaps.watch(group)

    async def _join_from(
        self, group: str, since: StreamPosition | None, last: int | None
    ) -> StreamPosition:
        hub = self.hub
        joins = self._joins
        if joins is None:
            joins = self._joins = StreamJoins(max(self._max_pending, 100))
        joins.begin(group)
        replay: list[Event] = []
        try:
            await hub.group_add(group, self.channel_name)
            self._add_group(group)
            page = await self._read(group, since, last, replay)
            # The stash overflowed while reading: what it held is in the history, after
            # the page just read. Read on from there until a read ends with the stash kept.
            while joins.overflowed(group):
                page = await self._read(group, page.position, None, replay)
        except BaseException:
            for event in joins.abort(group):
                self._queue(event)
            if not joins.active:
                self._joins = None
            raise
        hub.stats.events_replayed += len(replay)
        replay.extend(joins.finish(group, page.position))  # live ones newer than the read
        if self._gaps is not None:
            self._gaps.at(group, page.position)
        if not joins.active:
            self._joins = None
        for event in replay:
            self._queue(event)
        return page.position

    async def _read(
        self, group: str, since: StreamPosition | None, last: int | None, into: list[Event]
    ) -> HistoryPage:
        hub = self.hub
        try:
            page = await hub.history(group, since, None if since is not None else last)
        except HistoryGap as gap:
            logger.debug("Joining %r from %s: %s", group, since, gap)
            into.append(gap_event(gap))
            page = await hub.history(group, None, last or 0)
        into.extend(page.events)
        return page

    async def leave(self, group: str) -> None:
        """Leave *group* (withdrawing this connection's presence in it, if any)."""
        joins = self._joins
        if joins is not None:
            joins.discard(group)
            if not joins.active:
                self._joins = None
        if self._gaps is not None:
            self._gaps.forget(group)
        if self._groups and group in self._groups:
            self._groups.discard(group)
            await self.hub.group_discard(group, self.channel_name)
        if self._presence and group in self._presence:
            self._presence.discard(group)
            await self.hub.presence_leave(group, self.channel_name)

    async def group_send(self, group: str, event: Event) -> None:
        """Send *event* to every member of *group* (this connection too, if a member)."""
        await self.hub.group_send(group, dict(event))

    # -- events from the hub -----------------------------------------------------------

    def push_event(self, event: Event) -> bool:
        """Queue a layer event for this connection's ``on`` handlers (arrival order).

        Returns False when the queue is full while the handlers are still working through
        it: the hub then waits (:meth:`wait_for_room`). A full queue whose handler waits
        on a client that does not read gets the slow-consumer policy instead.
        """
        joins = self._joins
        if joins is not None and "offset" in event:
            verdict = joins.offer(event)
            if verdict != PASS:
                if verdict == DUPLICATE:
                    self.hub.stats.duplicates_skipped += 1
                return True
            if not joins.active:
                self._joins = None  # every join's window closed: broadcasts go direct again
        events = self._events
        if events is None:
            events = self._events = deque()
        elif len(events) >= self._max_pending:  # (0 once closed as a slow consumer)
            if not self._slow:
                if not self._writing:
                    return False
                self._slow_consumer()
            self._undeliverable(event, "closed as a slow consumer")
            return True
        events.append(event)
        if self._drain is None:
            hub = self._hub  # set: events come only to a registered channel, via the hub
            assert hub is not None
            self._drain = hub.spawn(self._run_events())
        return True

    def _queue(self, event: Event) -> None:
        """Queue an event the connection itself fetched (history): bounded by the history
        size, not by ``max_pending``, and never refused."""
        if self._slow:
            self._undeliverable(event, "closed as a slow consumer")
            return
        events = self._events
        if events is None:
            events = self._events = deque()
        events.append(event)
        if self._drain is None:
            self._drain = self.hub.spawn(self._run_events())

    async def wait_for_room(self, timeout: float) -> None:
        """Wait until :meth:`push_event` takes another event.

        Past *timeout* with the queue still full (its handler stuck), or as soon as the
        handler waits on a client that does not read, the slow-consumer policy applies.
        """
        events = self._events
        while events and not self._slow and len(events) >= self._max_pending:
            if self._writing:
                self._slow_consumer()
                return
            room = self._room = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(room, timeout)
            except asyncio.TimeoutError:
                self._slow_consumer()
                return
            finally:
                self._room = None

    @property
    def events_pending(self) -> bool:
        """True while layer events wait to be handled (broadcast frames then queue too),
        and while a history join is in progress or its duplicate window open."""
        return bool(self._events) or self._joins is not None

    async def _run_events(self) -> None:
        events = self._events
        try:
            while events:
                # The event leaves the queue only once handled: a broadcast frame arriving
                # meanwhile sees events_pending and queues behind it, keeping the order.
                await self.handle_event(events[0])
                if events:  # emptied meanwhile by the slow-consumer policy or aclose()
                    events.popleft()
                room = self._room
                if room is not None and not room.done():
                    room.set_result(None)
        finally:
            self._drain = None

    async def handle_event(self, event: Event) -> None:
        """Run the ``on`` handler for one layer *event* (a broadcast: write its frame).

        Events of a history group the layer dropped for this connection while its channel
        was full are read from the history and handled in their place, in order, or
        replaced by a ``history.gap`` event when the history no longer has them (or
        cannot be read): where the layer left a ``history.missed`` notice for them, or,
        for a layer that leaves none, before the group's next event, whose offset skips
        them.
        """
        kind = event.get("type")
        if kind == HISTORY_MISSED:
            await self._read_missed(event)
            return
        gaps = self._gaps
        if gaps is not None and "offset" in event:
            if kind == BROADCAST:
                gaps.forget(event.get("group"))
            else:
                since = gaps.check(event)
                if since is not None:
                    await self._handle_missed(event, since)
        if kind == BROADCAST:
            await self._write_frame(event)
            return
        await self._dispatch(event)

    async def _write_frame(self, event: Event) -> None:
        """Write a broadcast *event*'s frame to the socket (one that queued behind events)."""
        if self.application_state is not WebSocketState.CONNECTED:
            self._undeliverable(event, "its socket is closed")
            return
        text = event.get("text")
        try:
            if text is not None:
                await self.send_text(text)
            else:
                await self.send_bytes(event.get("bytes") or b"")
        except (WebSocketDisconnect, WebSocketStateError):
            self._undeliverable(event, "its socket closed")

    async def _read_missed(self, notice: Event) -> None:
        # The layer had no room for offsets first..offset of a history group (events or
        # broadcast frames) and queued this notice where they would have been: read them
        # from the history now and handle them here, in order. What a read at a jump in
        # the offsets already handled (a watched group) is not handled twice.
        group, epoch = notice["group"], notice["epoch"]
        after, last = notice["first"] - 1, notice["offset"]
        gaps = self._gaps
        handled = gaps.handled(group) if gaps is not None else None
        if handled is not None and handled.epoch == epoch:
            after = max(after, handled.offset)
        if after >= last:
            return
        missed = await self._read_range(group, StreamPosition(after, epoch), last - after, last)
        self.hub.stats.events_refetched += len(missed)
        for event in missed:
            if gaps is not None:
                gaps.check(event)  # handled here: the group's next event follows on
            if event.get("type") == BROADCAST:
                await self._write_frame(event)
            else:
                await self._dispatch(event)

    async def _read_range(
        self, group: str, since: StreamPosition, count: int | None, end: int
    ) -> list[Event]:
        """The events of *group* after *since* up to offset *end* (*count* of them, if
        known) from the history, to handle in place of those the layer dropped for this
        connection; a ``history.gap`` event instead when the history no longer has them
        or cannot be read now (never a silent gap)."""
        where = peer(self.scope)
        try:
            page = await self.hub.history(group, since, count)
        except HistoryGap as gap:
            logger.debug("%s missed events of %r: %s", where, group, gap)
            told = [gap_event(gap)]
            if gap.reason == "too_old" and count:
                # The notice first, then what of the run the history still has.
                try:
                    newest = await self.hub.history(group, None, count)
                except Exception as exc:  # the notice is told: the client reloads
                    logger.debug("Reading the rest of %r failed: %s", group, exc)
                else:
                    told += [
                        e
                        for e in newest.events
                        if e.get("epoch") == since.epoch
                        and since.offset < e.get("offset", since.offset) <= end
                    ]
            return told
        except Exception as exc:
            logger.warning(
                "Could not read the events of %r after offset %d that %s missed (its "
                "channel was full): %s; it is sent a history.gap (reason \"unavailable\")",
                group, since.offset, where, exc,
            )  # fmt: skip
            return [lost_event(group, since)]
        missed = [e for e in page.events if e.get("offset", end) <= end]
        logger.debug(
            "%s missed %d events of %r (its channel was full); handled from the history",
            where, len(missed), group,
        )  # fmt: skip
        return missed

    async def _handle_missed(self, event: Event, since: StreamPosition) -> None:
        # Read what the layer dropped for this connection from the history: the run
        # after *since* and before *event*, handled before it as if it had arrived.
        group, offset, epoch = event["group"], event["offset"], event["epoch"]
        count = offset - since.offset - 1 if epoch == since.epoch else None
        missed = await self._read_range(group, since, count, offset - 1)
        if any(e.get("type") == BROADCAST for e in missed):
            # Frames may have been written already: fill only what handlers missed.
            assert self._gaps is not None
            self._gaps.forget(group)
            missed = [e for e in missed if e.get("type") != BROADCAST]
        self.hub.stats.events_refetched += len(missed)
        for missed_event in missed:
            await self._dispatch(missed_event)

    async def _dispatch(self, event: Event) -> None:
        """Run the ``on`` handler(s) for one layer *event* that is not a broadcast."""
        kind = event.get("type")
        handler = self._handler
        if kind == PRESENCE_DIFF:
            await self._presence_diff(event)
            return
        func = handler.events.get(kind) if handler is not None and isinstance(kind, str) else None
        if func is None:
            self.hub.stats.events_unhandled += 1
            logger.warning(
                "No on(%r) handler on %s; event dropped.%s",
                kind,
                getattr(handler, "__qualname__", "this connection"),
                unhandled_hint(
                    kind,
                    handler.events if handler is not None else (),
                    getattr(handler, "__name__", "handler"),
                ),
            )
            return
        try:
            await func(self, event)
        except (WebSocketDisconnect, WebSocketStateError):
            if self.application_state is not WebSocketState.DISCONNECTED:
                raise
        except LayerUnavailable as exc:
            self._layer_unavailable(exc)
            await self._close_quietly(CloseCode.INTERNAL_ERROR, LAYER_UNAVAILABLE)
        except Exception:
            logger.exception("Exception in on(%r) handler for %s", kind, self.scope.get("path"))
            await self._close_quietly(CloseCode.INTERNAL_ERROR)

    async def _presence_diff(self, event: Event) -> None:
        """Run ``on("presence.diff")`` with the raw diff, and ``on("presence.join")`` /
        ``on("presence.leave")`` for a key's first arrival and last departure
        (:func:`chanlite.presence.key_events`). Opt-in: with none of these handlers,
        diffs are skipped quietly."""
        handler = self._handler
        found = handler.events if handler is not None else {}
        calls = [event] if PRESENCE_DIFF in found else []
        calls += [e for e in key_events(event) if e["type"] in found]
        for payload in calls:
            try:
                await found[payload["type"]](self, payload)
            except (WebSocketDisconnect, WebSocketStateError):
                if self.application_state is not WebSocketState.DISCONNECTED:
                    raise
                return
            except Exception:
                logger.exception("Exception in on(%r) handler", payload["type"])
                await self._close_quietly(CloseCode.INTERNAL_ERROR)
                return

    def _undeliverable(self, event: Event, why: str) -> None:
        self.hub.stats.events_undeliverable += 1
        logger.debug(
            "%r event for %s not delivered: %s", event.get("type"), self._channel_name, why
        )

    def _slow_consumer(self) -> None:
        """Close with 1013 "slow consumer", count it, log it once, drop the queue."""
        if self._slow:
            return
        self._slow = True
        self._max_pending = 0  # every later event takes push_event's refusal branch
        hub = self.hub
        hub.stats.slow_consumers += 1
        events = self._events or ()
        dropped = len(events)
        waiting = encoded_size(events)  # measured now, not per queued event
        if self._events:
            self._events.clear()
        hub.stats.events_undeliverable += dropped
        hub.stats.slow_consumer_events += dropped
        hub.stats.slow_consumer_bytes += waiting
        groups = sorted(self._groups or ())
        hub.slow_consumer("events", self.scope, self._channel_name, groups, waiting, dropped)
        logger.warning(
            "Closing WebSocket %s from %s with 1013: slow consumer (%d events, %d bytes "
            "waiting for it dropped; its client does not read; channel %s, groups %s)",
            self.scope.get("path"),
            peer(self.scope),
            dropped,
            waiting,
            self._channel_name,
            ", ".join(groups) or "none",
        )
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)
        hub.spawn(self._close_quietly(CloseCode.TRY_AGAIN_LATER, SLOW_CONSUMER))

    def _server_slow_consumer(self, waiting: int, why: str) -> str:
        """The server closed this connection as a slow consumer (*waiting* bytes unread)."""
        groups = sorted(self._groups or ())
        self.hub.slow_consumer("bytes", self.scope, self._channel_name, groups, waiting)
        return f"; channel {self._channel_name}, groups {', '.join(groups) or 'none'}"

    def _layer_unavailable(self, exc: LayerUnavailable) -> None:
        # The hub logs an outage once (and its end), not one traceback per connection.
        hub = self._hub
        if hub is not None:
            hub.layer_failed(exc)
        else:
            logger.error("Channel layer unavailable: %s", exc)

    # -- the handler's life -------------------------------------------------------------

    async def run_handler(self, **path_params: Any) -> None:
        """Run this connection's handler to its end, then close and release the connection.

        A handler that returns without closing closes with 1000 (or rejects, before
        accept); one that raises is logged and closes with 1011. Either way the channel,
        the group memberships and the queued events are released (:meth:`aclose`).
        """
        handler = self._handler
        if handler is None:
            raise WebSocketStateError("This WebSocket has no handler to run")
        frames = self.scope.get("extensions", {}).get("chanlite.frames")
        if frames is not None and self._hub is not None:
            # The server's slow-consumer policy (bytes its client left unread) tells the
            # hub, and names this connection's channel and groups in its log line.
            frames["on_slow_consumer"] = self._server_slow_consumer
        try:
            await handler(self, **path_params)
        except WebSocketDisconnect:
            pass
        except LayerUnavailable as exc:
            self._layer_unavailable(exc)
            await self._close_quietly(CloseCode.INTERNAL_ERROR, LAYER_UNAVAILABLE)
        except Exception:
            if RAISE_EXCEPTIONS in self.scope.get("extensions", ()):
                # A test client asked to see it: close as a server would, then raise.
                await self._close_quietly(CloseCode.INTERNAL_ERROR)
                raise
            logger.exception(
                "Exception in WebSocket handler %s for %s",
                getattr(handler, "__name__", handler),
                self.scope.get("path"),
            )
            await self._close_quietly(CloseCode.INTERNAL_ERROR)
        finally:
            if self.application_state is not WebSocketState.DISCONNECTED or self.needs_cleanup:
                await self.aclose()

    @property
    def needs_cleanup(self) -> bool:
        """True when :meth:`aclose` has something to release (a channel, queued events)."""
        return self._channel_name is not None or self._drain is not None or bool(self._events)

    async def aclose(self) -> None:
        """Close the socket (1000) if still open; forget the channel, leave the groups and
        drop pending events. Safe to call more than once."""
        await self._close_quietly(CloseCode.NORMAL)
        drain = self._drain
        if drain is not None:
            drain.cancel()
            self._drain = None
        if self._events:
            self._events.clear()
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)  # the hub's reader waits for this queue no longer
        name = self._channel_name
        hub = self._hub
        if name is not None and hub is not None:
            hub.unregister(name)
            self._joins = None
            groups, self._groups = self._groups, None
            await _each_group(hub, groups, hub.group_discard, name, "leave group")
            # After leaving the groups: the others hear of it, this connection does not.
            presence, self._presence = self._presence, None
            await _each_group(hub, presence, hub.presence_leave, name, "withdraw presence in")


async def _each_group(
    hub: Hub,
    groups: Iterable[str] | None,
    leave: Callable[[str, str], Awaitable[None]],
    channel: str,
    what: str,
) -> None:
    # On disconnect: one group failing to let go must not keep the others.
    for group in groups or ():
        try:
            await leave(group, channel)
        except LayerUnavailable as exc:
            hub.layer_failed(exc)
        except Exception:
            logger.warning("Could not %s %r on disconnect", what, group, exc_info=True)


def _presence_arg(presence: object) -> tuple[str, dict[str, Any]]:
    if (
        not isinstance(presence, tuple)
        or len(presence) != 2
        or not isinstance(presence[0], str)
        or not isinstance(presence[1], dict)
    ):
        raise PresenceError(f"presence must be a (key: str, meta: dict) tuple, not {presence!r}")
    return presence[0], presence[1]
