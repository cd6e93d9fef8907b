"""The WebSocket connection object handed to a handler: one per socket.

It is the ASGI exchange (:class:`~chanlite.asgi_websocket.ASGIWebSocket`: the state
machine and the typed helpers) plus the connection's place on the channel layer. The
connection dispatches its own layer events, as a Channels consumer does: events for it
(``@handler.on("type")``) are queued in arrival order and run by a short-lived drain task
that exists only while events are pending, so an idle connection costs no task, no timer
and no queue. It knows the process's :class:`~chanlite.hub.Hub` (its link to the layer),
never the App; it runs its handler and cleans up after it (:meth:`WebSocket.run_handler`).

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
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from chanlite.asgi_websocket import ASGIWebSocket, WebSocketState, peer
from chanlite.broadcast import BROADCAST
from chanlite.closecodes import SLOW_CONSUMER, CloseCode
from chanlite.exceptions import WebSocketDisconnect, WebSocketStateError
from chanlite.layers.base import Event
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

    __slots__ = (
        "_channel_name",
        "_drain",
        "_events",
        "_groups",
        "_handler",
        "_hub",
        "_max_pending",
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

    async def join(self, group: str) -> None:
        """Join *group*: its events and broadcasts reach this connection until it ends."""
        await self.hub.group_add(group, self.channel_name)
        if self._groups is None:
            self._groups = set()
        self._groups.add(group)

    async def leave(self, group: str) -> None:
        """Leave *group*."""
        if self._groups and group in self._groups:
            self._groups.discard(group)
            await self.hub.group_discard(group, self.channel_name)

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
        """True while layer events wait to be handled (broadcast frames then queue too)."""
        return bool(self._events)

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
        """Run the ``on`` handler for one layer *event* (a broadcast: write its frame)."""
        kind = event.get("type")
        if kind == BROADCAST:
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
            return
        handler = self._handler
        func = handler.events.get(kind) if handler is not None and isinstance(kind, str) else None
        if func is None:
            self.hub.stats.events_unhandled += 1
            logger.warning(
                "No on(%r) handler on %s; event dropped",
                kind,
                getattr(handler, "__qualname__", "this connection"),
            )
            return
        try:
            await func(self, event)
        except (WebSocketDisconnect, WebSocketStateError):
            if self.application_state is not WebSocketState.DISCONNECTED:
                raise
        except Exception:
            logger.exception("Exception in on(%r) handler for %s", kind, self.scope.get("path"))
            await self._close_quietly(CloseCode.INTERNAL_ERROR)

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
        dropped = len(self._events or ())
        if self._events:
            self._events.clear()
        hub.stats.events_undeliverable += dropped
        logger.warning(
            "Closing WebSocket %s from %s with 1013: slow consumer (%d events waiting for it "
            "dropped; its client does not read)",
            self.scope.get("path"),
            peer(self.scope),
            dropped,
        )
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)
        hub.spawn(self._close_quietly(CloseCode.TRY_AGAIN_LATER, SLOW_CONSUMER))

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
        try:
            await handler(self, **path_params)
        except WebSocketDisconnect:
            pass
        except Exception:
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
            for group in self._groups or ():
                try:
                    await hub.group_discard(group, name)
                except Exception:
                    logger.warning("Could not leave group %r on disconnect", group, exc_info=True)
            self._groups = None
