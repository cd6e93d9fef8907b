"""The ASGI side of a WebSocket: the exchange with the server as a state machine.

:class:`ASGIWebSocket` validates every ASGI message against the connection's state, so
misuse fails with a message that says what to do, and offers the typed helpers
(``send_text``, ``receive_json``, ``iter_text``, ...) on one send/receive pair. It knows
nothing of layers, hubs or apps; :class:`chanlite.websocket.WebSocket` builds on it.

A frame of the wrong kind for a typed reader is the client's error, not the app's: it
closes with 1003 (1007 for a frame that is not JSON) and an INFO line, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from enum import Enum
from typing import Any

from chanlite.closecodes import CloseCode
from chanlite.encoders import json_default
from chanlite.exceptions import WebSocketDisconnect, WebSocketStateError
from chanlite.requests import HTTPConnection
from chanlite.types import Message, Receive, Scope, Send

logger = logging.getLogger("chanlite.websocket")


class WebSocketState(Enum):
    """Where one side of the connection is."""

    CONNECTING = 0
    CONNECTED = 1
    DISCONNECTED = 2


class ASGIWebSocket(HTTPConnection):
    """One WebSocket's ASGI exchange: accept, send, receive, close, typed helpers."""

    __slots__ = (
        "_receive",
        "_send",
        "_send_now",
        "_writing",
        "application_state",
        "client_state",
        "close_code",
        "close_reason",
        "frame_writer",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise ValueError(f"WebSocket needs a websocket scope, not {scope['type']!r}")
        super().__init__(scope)
        self._receive = receive
        self._send = send
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
        elif self.client_state is WebSocketState.DISCONNECTED and kind == "websocket.send":
            # The client left (it was not this side that closed): the handler ends as for
            # a disconnect seen by receive, not with an error a client could cause at will.
            raise WebSocketDisconnect(self.close_code or 1006, self.close_reason)
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

    def _json_default(self) -> Callable[[Any], Any]:
        """The hook for values JSON cannot hold (the App's ``json_default`` on a chanlite
        WebSocket)."""
        return json_default

    async def send_json(self, data: Any, mode: str = "text") -> None:
        """Send *data* as compact JSON in a text frame (or a binary one with mode="binary")."""
        text = json.dumps(
            data, separators=(",", ":"), ensure_ascii=False, default=self._json_default()
        )
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
            peer(self.scope),
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

    async def _close_quietly(self, code: int, reason: str = "") -> None:
        if self.application_state is WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(WebSocketDisconnect, WebSocketStateError, RuntimeError):
            await self.close(code, reason)  # may fail: the client can already be gone


_WANT_TEXT = (CloseCode.UNSUPPORTED_DATA, "expected text frames", "a binary frame to a text reader")
_WANT_BYTES = (
    CloseCode.UNSUPPORTED_DATA,
    "expected binary frames",
    "a text frame to a binary reader",
)


def peer(scope: Scope) -> str:
    """The client's ``host:port`` for log lines."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


def _json_of(message: Message) -> Any:
    raw = message.get("text")
    if raw is None:
        raw = message.get("bytes") or b""
    return json.loads(raw)
