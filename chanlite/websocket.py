"""The WebSocket connection object handed to a handler: one per socket.

An explicit state machine guards the ASGI exchange, so misuse fails with a message that
says what to do. The connection dispatches its own layer events, as a Channels consumer
does: events for it (``@handler.on("type")``) are queued in arrival order and run by a
short-lived drain task that exists only while events are pending, so an idle connection
costs no task, no timer and no queue. It knows the process's :class:`~chanlite.hub.Hub`
(its link to the layer), never the App.

The queue of events waiting for a handler is bounded (``App(max_pending_events=...)``,
by default the layer's capacity for the channel). A client that does not read while the
queue is full gets the slow-consumer policy: closed with 1013 "slow consumer", counted in
``stats.slow_consumers`` and logged once at WARNING with its address; its queue is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from chanlite.broadcast import BROADCAST
from chanlite.closecodes import SLOW_CONSUMER, CloseCode
from chanlite.exceptions import WebSocketDisconnect, WebSocketStateError
from chanlite.layers.base import Event
from chanlite.requests import HTTPConnection
from chanlite.types import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from chanlite.hub import HasHub, Hub

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


class WebSocketState(Enum):
    """Where one side of the connection is."""

    CONNECTING = 0
    CONNECTED = 1
    DISCONNECTED = 2


class WebSocket(HTTPConnection):
    """A WebSocket connection: accept, send, receive, join groups, get layer events."""

    __slots__ = (
        "_channel_name",
        "_drain",
        "_events",
        "_groups",
        "_handler",
        "_hub",
        "_max_pending",
        "_receive",
        "_room",
        "_send",
        "_send_now",
        "_slow",
        "_writing",
        "application_state",
        "client_state",
        "close_code",
        "close_reason",
        "frame_writer",
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
        if scope["type"] != "websocket":
            raise ValueError(f"WebSocket needs a websocket scope, not {scope['type']!r}")
        super().__init__(scope)
        self._receive = receive
        self._send = send
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
        self._writing = 0  # ASGI sends in progress (waiting for the client, if suspended)
        self.client_state = WebSocketState.CONNECTING
        self.application_state = WebSocketState.CONNECTING
        #: The close code once the connection has closed (from either side), else None.
        self.close_code: int | None = None
        self.close_reason: str = ""
        #: The server's raw frame writer (``chanlite.frames`` extension) while accepted;
        #: looked up once at accept so a broadcast costs no dict walk per member.
        self.frame_writer: Callable[[bytes], bool] | None = None
        # The server's direct writer (``send_now`` in the same extension) while accepted.
        self._send_now: Callable[[str | bytes, bool], bool] | None = None

    # -- the raw ASGI exchange ---------------------------------------------------------

    async def receive(self) -> Message:
        """Return the next raw ASGI message from the client side."""
        if self.client_state is WebSocketState.DISCONNECTED:
            raise WebSocketStateError(
                "The client has disconnected; stop receiving (catch WebSocketDisconnect "
                "or use iter_text()/iter_json(), which end cleanly)."
            )
        return self._received(await self._receive())

    def _received(self, message: Message) -> Message:
        kind = message["type"]
        if self.client_state is WebSocketState.CONNECTING:
            if kind != "websocket.connect":
                raise WebSocketStateError(f"Expected websocket.connect, got {kind!r}")
            self.client_state = WebSocketState.CONNECTED
        elif kind == "websocket.disconnect":
            if self.close_code is None:
                self.close_reason = message.get("reason") or ""
            self._mark_gone(message.get("code", 1005))
        elif kind != "websocket.receive":
            raise WebSocketStateError(f"Unexpected ASGI message {kind!r} from the server")
        return message

    async def send(self, message: Message) -> None:
        """Send one raw ASGI message, checked against the connection state."""
        kind = message["type"]
        state = self.application_state
        if state is WebSocketState.CONNECTING:
            if kind not in ("websocket.accept", "websocket.close", "websocket.http.response.start"):
                raise WebSocketStateError(
                    f"Cannot send {kind!r} before the connection is accepted; "
                    "call await ws.accept() first."
                )
            if self.client_state is WebSocketState.CONNECTING:
                await self.receive()  # consume websocket.connect
            if kind == "websocket.accept":
                self.application_state = WebSocketState.CONNECTED
                extensions = self.scope.get("extensions")
                frames = extensions.get("chanlite.frames") if extensions else None
                writer = frames.get("send_frame") if frames else None
                self.frame_writer = writer if callable(writer) else None
                send_now = frames.get("send_now") if frames else None
                self._send_now = send_now if callable(send_now) else None
            elif kind == "websocket.close":
                self.application_state = WebSocketState.DISCONNECTED
                self.close_code = message.get("code", 1000)
                self.close_reason = message.get("reason") or ""
            else:
                self.application_state = WebSocketState.DISCONNECTED
        elif state is WebSocketState.CONNECTED:
            if kind == "websocket.accept":
                raise WebSocketStateError(
                    "accept() was already called on this connection; accept only once."
                )
            if kind == "websocket.close":
                self.application_state = WebSocketState.DISCONNECTED
                self.frame_writer = self._send_now = None
                self.close_code = message.get("code", 1000)
                self.close_reason = message.get("reason") or ""
            elif kind != "websocket.send":
                raise WebSocketStateError(f"Cannot send {kind!r} on an open connection")
        else:
            raise WebSocketStateError(
                f"Cannot send {kind!r}: the connection is closed (close code {self.close_code})."
            )
        # Counted while in progress: a send still suspended when the next event arrives
        # means the client is not reading what it was sent (see push_event).
        self._writing += 1
        try:
            await self._send(message)
        except OSError:
            # The client went away mid-send: routine, not a handler bug. End the handler
            # the way receive() would, instead of surfacing a transport error.
            self._mark_gone(1006)
            raise WebSocketDisconnect(self.close_code or 1006, self.close_reason) from None
        finally:
            self._writing -= 1

    def _mark_gone(self, code: int) -> None:
        self.client_state = WebSocketState.DISCONNECTED
        self.application_state = WebSocketState.DISCONNECTED
        self.frame_writer = self._send_now = None
        if self.close_code is None:
            self.close_code = code

    # -- handshake and close ---------------------------------------------------------

    async def accept(
        self,
        subprotocol: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Accept the handshake, optionally choosing a *subprotocol* and adding *headers*."""
        if self.application_state is WebSocketState.CONNECTED:
            raise WebSocketStateError(
                "accept() was already called on this connection; accept only once."
            )
        await self.send(
            {
                "type": "websocket.accept",
                "subprotocol": subprotocol,
                "headers": list(headers or []),
            }
        )

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (before accept, this rejects the handshake with 403)."""
        await self.send({"type": "websocket.close", "code": code, "reason": reason})

    @property
    def accepted(self) -> bool:
        """True while the connection is accepted and not closed by the app."""
        return self.application_state is WebSocketState.CONNECTED

    # -- typed helpers -------------------------------------------------------------------

    async def send_text(self, data: str) -> None:
        """Send a text frame."""
        # On chanlite's server, an open socket whose client keeps up is written to
        # directly: no message dict, no state dispatch, no await.
        send_now = self._send_now
        if send_now is None or not send_now(data, True):
            await self.send({"type": "websocket.send", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame."""
        send_now = self._send_now
        if send_now is None or not send_now(data, False):
            await self.send({"type": "websocket.send", "bytes": data})

    async def send_json(self, data: Any, mode: str = "text") -> None:
        """Send *data* as compact JSON in a text frame (or a binary one with mode="binary")."""
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if mode == "binary":
            await self.send_bytes(text.encode())
        else:
            await self.send_text(text)

    async def _next_data(self) -> Message | None:
        """The next ``websocket.receive`` message, or None once the client has left
        (no exception: the ``iter_*`` loops end without one)."""
        if self.application_state is WebSocketState.CONNECTING:
            raise WebSocketStateError("Call await ws.accept() before receiving messages.")
        if self.client_state is WebSocketState.CONNECTED:
            # The steady state, one coroutine less: a data message needs no bookkeeping.
            message = await self._receive()
            if message["type"] != "websocket.receive":
                message = self._received(message)
        else:
            message = await self.receive()
        return None if message["type"] == "websocket.disconnect" else message

    def _disconnected(self) -> WebSocketDisconnect:
        return WebSocketDisconnect(self.close_code or 1005, self.close_reason)

    async def _refuse(self, code: CloseCode, reason: str, detail: str) -> WebSocketDisconnect:
        """Close for a frame the handler cannot take: the client's error, not the app's.

        Logged at INFO (no traceback); returns the exception ``receive_*`` raises.
        """
        logger.info(
            "Closing WebSocket %s from %s with %d: %s",
            self.scope.get("path"),
            _peer(self.scope),
            code,
            detail,
        )
        if self.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, WebSocketStateError):
                await self.close(code, reason)
        return WebSocketDisconnect(int(code), reason)

    async def receive_text(self) -> str:
        """Wait for a text frame; raise WebSocketDisconnect when the client leaves.

        A binary frame closes the connection with 1003 and raises WebSocketDisconnect.
        """
        message = await self._next_data()
        if message is None:
            raise self._disconnected()
        text = message.get("text")
        if text is None:
            raise await self._refuse(*_WANT_TEXT)
        return str(text)

    async def receive_bytes(self) -> bytes:
        """Wait for a binary frame; raise WebSocketDisconnect when the client leaves.

        A text frame closes the connection with 1003 and raises WebSocketDisconnect.
        """
        message = await self._next_data()
        if message is None:
            raise self._disconnected()
        data = message.get("bytes")
        if data is None:
            raise await self._refuse(*_WANT_BYTES)
        return bytes(data)

    async def receive_json(self) -> Any:
        """Wait for a frame holding JSON (text or binary) and decode it.

        Invalid JSON raises ``ValueError``; the handler may catch it and carry on.
        """
        message = await self._next_data()
        if message is None:
            raise self._disconnected()
        return _json_of(message)

    async def iter_text(self) -> AsyncIterator[str]:
        """Yield text frames until the client disconnects.

        A binary frame ends the loop too, closing the connection with 1003 (unsupported
        data): the client broke the protocol the handler expects.
        """
        while (message := await self._next_data()) is not None:
            text = message.get("text")
            if text is None:
                await self._refuse(*_WANT_TEXT)
                return
            yield text

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Yield binary frames until the client disconnects.

        A text frame ends the loop too, closing the connection with 1003 (unsupported data).
        """
        while (message := await self._next_data()) is not None:
            data = message.get("bytes")
            if data is None:
                await self._refuse(*_WANT_BYTES)
                return
            yield data

    async def iter_json(self) -> AsyncIterator[Any]:
        """Yield decoded JSON frames until the client disconnects.

        A frame that is not JSON ends the loop too: the connection is closed with 1007
        (invalid payload), since the client broke the protocol the handler expects.
        """
        while (message := await self._next_data()) is not None:
            try:
                value = _json_of(message)
            except ValueError as exc:
                await self._refuse(
                    CloseCode.INVALID_PAYLOAD, "invalid JSON", f"frame is not JSON ({exc})"
                )
                return
            yield value

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
            _peer(self.scope),
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

    async def _close_quietly(self, code: int, reason: str = "") -> None:
        if self.application_state is WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(WebSocketDisconnect, WebSocketStateError, RuntimeError):
            await self.close(code, reason)  # may fail: the client can already be gone

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


_WANT_TEXT = (CloseCode.UNSUPPORTED_DATA, "expected text frames", "a binary frame to a text reader")
_WANT_BYTES = (
    CloseCode.UNSUPPORTED_DATA,
    "expected binary frames",
    "a text frame to a binary reader",
)


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


def _json_of(message: Message) -> Any:
    raw = message.get("text")
    if raw is None:
        raw = message.get("bytes") or b""
    return json.loads(raw)
