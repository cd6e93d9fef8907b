"""WebSockets for the test client: one session with the app, and the refused handshake.

``WebSocketTestSession`` plays the server's side of the ASGI WebSocket protocol, including
the denial-response extension, and checks every message the app sends.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from chanlite.exceptions import WebSocketDisconnect
from chanlite.testing._call import (
    BUFFER_LIMIT,
    AppCall,
    ClientDisconnected,
    Session,
    check_headers,
    logger,
)
from chanlite.testing.http import ResponseHeaders, TestResponse
from chanlite.types import Message, Scope

__all__ = ["WebSocketRejected", "WebSocketTestSession"]


class WebSocketRejected(WebSocketDisconnect):
    """The app refused the WebSocket handshake; ``response`` is the HTTP answer.

    ``status_code`` is 403 when the app closed before accepting (``code``/``reason`` are
    from its ``websocket.close``), the app's own status with the denial-response extension,
    or 500 when the app failed (``code`` is then 1006: no WebSocket ever existed).
    """

    def __init__(self, response: TestResponse, code: int = 1006, reason: str = "") -> None:
        super().__init__(code, reason)
        self.response = response
        self.status_code = response.status_code
        self.headers = response.headers
        self.content = response.content

    @property
    def text(self) -> str:
        return self.response.text

    def __str__(self) -> str:
        return f"WebSocket handshake rejected with HTTP {self.status_code}" + (
            f" (close code {self.code}{': ' + self.reason if self.reason else ''})"
            if self.code != 1006
            else ""
        )


class WebSocketTestSession:
    """One WebSocket connection to the app, opened by ``async with client.websocket(...)``.

    After the handshake: ``accepted_subprotocol`` and ``accept_headers``. Once either side
    has closed: ``close_code`` and ``close_reason``. If the app closes, the next
    ``receive_*`` raises ``WebSocketDisconnect`` (after the messages sent before the close);
    an app that crashes closes with 1011 and (with ``raise_server_exceptions``) its
    exception is raised by the next ``receive_*``, ``close()`` or the block's exit.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, session: Session, scope: Scope, subprotocols: Sequence[str]) -> None:
        self.scope = scope
        self.accepted_subprotocol: str | None = None
        self.accept_headers = ResponseHeaders()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._session = session
        self._label = f"websocket {scope['path']}"
        self._offered = list(subprotocols)
        self._state = "connecting"  # -> open | denying -> closed
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._connect_sent = False
        self._disconnect: Message | None = None  # what receive() keeps answering once closed
        self._disconnect_delivered = False
        self._from_app: deque[Message] = deque()
        self._drained = asyncio.Event()
        self._accepted = False
        self._client_closed = False
        self._close_seen = False
        self._rejection: WebSocketRejected | None = None
        self._denial_status = 403
        self._denial_headers: list[tuple[bytes, bytes]] = []
        self._denial_body: list[bytes] = []
        self._call: AppCall | None = None

    # -- the app's side ------------------------------------------------------------------

    async def _receive(self) -> Message:
        if not self._connect_sent:
            self._connect_sent = True
            return {"type": "websocket.connect"}
        if self._disconnect_delivered and self._disconnect is not None:
            return dict(self._disconnect)
        message = await self._to_app.get()
        if message["type"] == "websocket.disconnect":
            self._disconnect_delivered = True
        return message

    def _end(self, code: int, reason: str) -> None:
        """The connection is over: the app's receive() answers websocket.disconnect."""
        if self._disconnect is None:
            self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._to_app.put_nowait(dict(self._disconnect))
        self._state = "closed"

    async def _send(self, message: Message) -> None:
        label, kind, state = self._label, message.get("type"), self._state
        if self._client_closed:
            raise ClientDisconnected(f"{label}: the client closed the connection")
        if kind == "websocket.accept":
            if state != "connecting":
                raise RuntimeError(f"{label}: websocket.accept sent when the socket is {state}")
            sub = message.get("subprotocol")
            if sub is not None and sub not in self._offered:
                raise ValueError(f"{label}: subprotocol {sub!r} not offered (got {self._offered})")
            headers = check_headers(message.get("headers", []), label)
            if any(name == b"sec-websocket-protocol" for name, _ in headers):
                raise ValueError(f"{label}: use the 'subprotocol' key, not a header")
            self.accepted_subprotocol = sub
            self.accept_headers = ResponseHeaders(headers)
            self._session.store_cookies(headers)
            self._state, self._accepted = "open", True
        elif kind == "websocket.send":
            if state != "open":
                raise RuntimeError(f"{label}: websocket.send sent when the socket is {state}")
            text, data = message.get("text"), message.get("bytes")
            if (text is None) == (data is None):
                raise ValueError(f"{label}: websocket.send needs exactly one of 'text'/'bytes'")
            if text is not None and not isinstance(text, str):
                raise TypeError(f"{label}: 'text' must be str, got {type(text).__name__}")
            if data is not None and not isinstance(data, bytes):
                raise TypeError(f"{label}: 'bytes' must be bytes, got {type(data).__name__}")
            while len(self._from_app) >= BUFFER_LIMIT and not self._client_closed:
                self._drained.clear()
                await self._drained.wait()
            if self._client_closed:
                raise ClientDisconnected(f"{label}: the client closed the connection")
            self._from_app.append({"type": "websocket.send", "text": text, "bytes": data})
        elif kind == "websocket.close":
            code, reason = message.get("code") or 1000, message.get("reason") or ""
            if not isinstance(code, int) or not isinstance(reason, str):
                raise TypeError(f"{label}: websocket.close needs an int code and a str reason")
            if state == "connecting":
                response = TestResponse(403, ResponseHeaders(), b"")
                self._rejection = WebSocketRejected(response, code, reason)
                self._end(1006, "")
            elif state == "open":
                self.close_code, self.close_reason = code, reason
                self._from_app.append({"type": "websocket.close", "code": code, "reason": reason})
                self._end(code, reason)
            else:
                raise RuntimeError(f"{label}: websocket.close sent when the socket is {state}")
        elif kind == "websocket.http.response.start":
            if state != "connecting":
                raise RuntimeError(f"{label}: {kind} sent when the socket is {state}")
            status = message.get("status")
            if not isinstance(status, int) or not 100 <= status < 600:
                raise ValueError(f"{label}: bad status in {kind}: {status!r}")
            self._denial_status = status
            self._denial_headers = check_headers(message.get("headers", []), label)
            self._state = "denying"
        elif kind == "websocket.http.response.body":
            if state != "denying":
                raise RuntimeError(f"{label}: {kind} before websocket.http.response.start")
            body = message.get("body", b"")
            if not isinstance(body, bytes):
                raise TypeError(f"{label}: body must be bytes, got {type(body).__name__}")
            self._denial_body.append(body)
            if not message.get("more_body", False):
                denial = ResponseHeaders(self._denial_headers)
                response = TestResponse(self._denial_status, denial, b"".join(self._denial_body))
                self._rejection = WebSocketRejected(response)
                self._end(1006, "")
        else:
            raise ValueError(f"{label}: unexpected ASGI message {kind!r} on a WebSocket")
        assert self._call is not None
        self._call.changed.set()

    def _app_returned(self) -> None:
        # Like a server: a crash closes with 1011; returning without a close frame is 1006.
        if self._state == "open":
            code = 1011 if self._call is not None and self._call.error() is not None else 1006
            self.close_code, self.close_reason = code, ""
            self._from_app.append({"type": "websocket.close", "code": code, "reason": ""})
            self._state = "closed"

    # -- the test's side -----------------------------------------------------------------

    async def __aenter__(self) -> WebSocketTestSession:
        if self._call is not None:
            raise RuntimeError(f"{self._label}: this session was already opened; make a new one")
        session = self._session
        self._call = call = AppCall(
            session, session.app(self.scope, self._receive, self._send), self._label
        )
        call.on_done = self._app_returned
        try:
            await call.wait_for(
                lambda: self._state in ("open", "closed") or call.done,
                "the app neither accepted nor rejected the handshake",
                None,
            )
        except BaseException:
            await call.finish(0)
            raise
        if self._accepted:  # it may already have sent, closed or returned: all readable
            return self
        if self._rejection is None:  # the app failed or returned during the handshake
            await call.finish(session.grace)
            call.report("the app returned without accepting or rejecting the handshake")
            response = TestResponse(500, ResponseHeaders(), b"")
            raise WebSocketRejected(response)
        await call.finish(session.grace)
        call.report()
        raise self._rejection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.close()
            return
        try:
            await self.close()
        except Exception:
            logger.exception("%s: error while closing after %r", self._label, exc)

    def _ensure_open(self) -> None:
        if self._call is None:
            raise RuntimeError("use `async with client.websocket(...) as ws:` to connect first")
        if self._client_closed or self._close_seen:
            raise WebSocketDisconnect(self.close_code or 1000, self.close_reason or "")

    async def _put(self, message: Message) -> None:
        self._ensure_open()
        self._to_app.put_nowait(message)

    async def send_text(self, data: str) -> None:
        """Send a text message to the app."""
        if not isinstance(data, str):
            raise TypeError(f"send_text() needs str, got {type(data).__name__}")
        await self._put({"type": "websocket.receive", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message to the app."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_bytes() needs bytes, got {type(data).__name__}")
        await self._put({"type": "websocket.receive", "bytes": bytes(data)})

    async def send_json(self, data: Any, *, binary: bool = False) -> None:
        """Send *data* as JSON, in a text message (or a binary one)."""
        encoded = jsonlib.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if binary:
            await self.send_bytes(encoded.encode())
        else:
            await self.send_text(encoded)

    async def receive(self, timeout: float | None = None) -> Message:
        """The app's next message (``websocket.send`` or ``websocket.close``), as sent.

        Raises the app's exception if it crashed (with ``raise_server_exceptions``), and
        ``WebSocketDisconnect`` if the close was already received.
        """
        if self._call is None:
            raise RuntimeError("use `async with client.websocket(...) as ws:` to connect first")
        if self._close_seen or (self._client_closed and not self._from_app):
            raise WebSocketDisconnect(self.close_code or 1000, self.close_reason or "")
        call = self._call
        await call.wait_for(
            lambda: bool(self._from_app) or call.done, "the app sent no message", timeout
        )
        if not self._from_app:  # the app ended after its own close had been read
            raise WebSocketDisconnect(self.close_code or 1006, self.close_reason or "")
        message = self._from_app.popleft()
        self._drained.set()
        if message["type"] == "websocket.close":
            self._close_seen = True
            call.report()
        return message

    async def _receive_data(self, timeout: float | None) -> str | bytes:
        message = await self.receive(timeout)
        if message["type"] == "websocket.close":
            raise WebSocketDisconnect(message["code"], message["reason"])
        text: str | None = message["text"]
        return message["bytes"] if text is None else text

    async def receive_text(self, timeout: float | None = None) -> str:
        """The next message, which must be text."""
        data = await self._receive_data(timeout)
        if not isinstance(data, str):
            raise TypeError(f"expected a text message, got bytes: {data[:60]!r}")
        return data

    async def receive_bytes(self, timeout: float | None = None) -> bytes:
        """The next message, which must be binary."""
        data = await self._receive_data(timeout)
        if not isinstance(data, bytes):
            raise TypeError(f"expected a binary message, got text: {data[:60]!r}")
        return data

    async def receive_json(self, timeout: float | None = None) -> Any:
        """The next message (text or binary) parsed as JSON."""
        return jsonlib.loads(await self._receive_data(timeout))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the client side and wait (briefly) for the app to finish."""
        if self._call is None:
            raise RuntimeError("use `async with client.websocket(...) as ws:` to connect first")
        if not self._client_closed and self._state != "closed":
            self.close_code, self.close_reason = code, reason
            self._end(code, reason)
        self._client_closed = True
        self._drained.set()
        await self._call.finish(self._session.grace)
        self._call.report()
