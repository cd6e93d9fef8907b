"""The WebSocket connection object handed to a handler: one per socket.

An explicit state machine guards the ASGI exchange, so misuse fails with a message that
says what to do. Layer events for the connection (``@handler.on("type")``) are queued in
arrival order and run by a short-lived drain task that exists only while events are
pending: an idle connection costs no task, no timer and no queue.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from enum import Enum
from typing import TYPE_CHECKING, Any

from chanlite.exceptions import WebSocketDisconnect, WebSocketStateError
from chanlite.layers.base import Message as Event
from chanlite.requests import HTTPConnection
from chanlite.types import Message, Receive, Scope, Send

if TYPE_CHECKING:
    import asyncio

    from chanlite.app import App
    from chanlite.endpoints import WebSocketHandler

logger = logging.getLogger("chanlite.websocket")


class WebSocketState(Enum):
    """Where one side of the connection is."""

    CONNECTING = 0
    CONNECTED = 1
    DISCONNECTED = 2


class WebSocket(HTTPConnection):
    """A WebSocket connection: accept, send, receive, join groups, get layer events."""

    __slots__ = (
        "_app",
        "_channel_name",
        "_drain",
        "_events",
        "_groups",
        "_handler",
        "_receive",
        "_send",
        "_send_now",
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
        app: App | None = None,
        handler: WebSocketHandler[Any] | None = None,
    ) -> None:
        if scope["type"] != "websocket":
            raise ValueError(f"WebSocket needs a websocket scope, not {scope['type']!r}")
        super().__init__(scope)
        self._receive = receive
        self._send = send
        self._app = app
        self._handler = handler
        self._channel_name: str | None = None
        self._groups: set[str] | None = None
        self._events: deque[Event] | None = None
        self._drain: asyncio.Task[None] | None = None
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
        try:
            await self._send(message)
        except OSError:
            # The client went away mid-send: routine, not a handler bug. End the handler
            # the way receive() would, instead of surfacing a transport error.
            self._mark_gone(1006)
            raise WebSocketDisconnect(self.close_code or 1006, self.close_reason) from None

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

    async def receive_text(self) -> str:
        """Wait for a text frame; raise WebSocketDisconnect when the client leaves."""
        message = await self._next_data()
        if message is None:
            raise self._disconnected()
        return _text_of(message)

    async def receive_bytes(self) -> bytes:
        """Wait for a binary frame; raise WebSocketDisconnect when the client leaves."""
        message = await self._next_data()
        if message is None:
            raise self._disconnected()
        return _bytes_of(message)

    async def receive_json(self) -> Any:
        """Wait for a frame holding JSON (text or binary) and decode it.

        Invalid JSON raises ``ValueError``; the handler may catch it and carry on.
        """
        message = await self._next_data()
        if message is None:
            raise self._disconnected()
        return _json_of(message)

    async def iter_text(self) -> AsyncIterator[str]:
        """Yield text frames until the client disconnects."""
        while (message := await self._next_data()) is not None:
            yield _text_of(message)

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Yield binary frames until the client disconnects."""
        while (message := await self._next_data()) is not None:
            yield _bytes_of(message)

    async def iter_json(self) -> AsyncIterator[Any]:
        """Yield decoded JSON frames until the client disconnects.

        A frame that is not JSON ends the loop too: the connection is closed with 1007
        (invalid payload), since the client broke the protocol the handler expects.
        """
        while (message := await self._next_data()) is not None:
            try:
                value = _json_of(message)
            except ValueError as exc:
                logger.info("Closing %s: frame is not JSON (%s)", self.scope.get("path"), exc)
                await self.close(1007, "invalid JSON")
                return
            yield value

    # -- the channel layer ---------------------------------------------------------------

    @property
    def app(self) -> App:
        """The chanlite App serving this connection."""
        if self._app is None:
            raise WebSocketStateError("This WebSocket is not attached to a chanlite App")
        return self._app

    @property
    def channel_name(self) -> str:
        """This connection's channel: ``await app.send(ws.channel_name, event)`` reaches it."""
        name = self._channel_name
        if name is None:
            name = self._channel_name = self.app.dispatcher.register(self)
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
        await self.app.layer.group_add(group, self.channel_name)
        if self._groups is None:
            self._groups = set()
        self._groups.add(group)

    async def leave(self, group: str) -> None:
        """Leave *group*."""
        if self._groups and group in self._groups:
            self._groups.discard(group)
            await self.app.layer.group_discard(group, self.channel_name)

    async def group_send(self, group: str, event: Event) -> None:
        """Send *event* to every member of *group* (this connection too, if a member)."""
        await self.app.layer.group_send(group, dict(event))

    # -- events from the dispatcher ----------------------------------------------------

    def push_event(self, event: Event) -> None:
        """Queue a layer event for this connection's ``on`` handlers (arrival order)."""
        events = self._events
        if events is None:
            events = self._events = deque()
        events.append(event)
        if self._drain is None:
            self._drain = self.app.spawn(self._run_events())

    @property
    def events_pending(self) -> bool:
        """True while layer events wait to be handled (broadcast frames then queue too)."""
        return bool(self._events)

    async def _run_events(self) -> None:
        events = self._events
        try:
            while events:
                event = events[0]
                await self.app.handle_event(self, self._handler, event)
                events.popleft()
        finally:
            self._drain = None

    @property
    def needs_cleanup(self) -> bool:
        """True when :meth:`_cleanup` has something to undo (a channel, queued events)."""
        return self._channel_name is not None or self._drain is not None or bool(self._events)

    async def _cleanup(self) -> None:
        """Forget the channel, drop group memberships and pending events."""
        drain = self._drain
        if drain is not None:
            drain.cancel()
            self._drain = None
        if self._events:
            self._events.clear()
        if self._channel_name is not None and self._app is not None:
            self._app.dispatcher.unregister(self._channel_name)
            layer = self._app.layer
            for group in self._groups or ():
                try:
                    await layer.group_discard(group, self._channel_name)
                except Exception:
                    logger.warning("Could not leave group %r on disconnect", group, exc_info=True)
            self._groups = None


def _text_of(message: Message) -> str:
    text = message.get("text")
    if text is None:
        raise WebSocketStateError("Expected a text frame, got a binary one")
    return str(text)


def _bytes_of(message: Message) -> bytes:
    data = message.get("bytes")
    if data is None:
        raise WebSocketStateError("Expected a binary frame, got a text one")
    return bytes(data)


def _json_of(message: Message) -> Any:
    raw = message.get("text")
    if raw is None:
        raw = message.get("bytes") or b""
    return json.loads(raw)
