"""An in-process test client for any ASGI 3 application: no sockets, no threads, all async.

::

    async with TestClient(app) as client:            # runs the lifespan startup/shutdown
        response = await client.get("/items/1")
        assert response.json() == {"id": 1}
        async with client.stream("GET", "/events") as response:    # server-sent events
            async for line in response.aiter_lines():
                ...
        async with client.websocket("/ws", subprotocols=["chat"]) as ws:
            await ws.send_text("hi")
            assert await ws.receive_text() == "hi"

Every wait is bounded by a timeout (5 s unless told otherwise) that names what it waited
for, and every task the client starts for the app has ended when the ``async with`` block
that started it exits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json as jsonlib
import logging
import os
import time
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from types import TracebackType
from typing import Any, TypeAlias
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit

from chanlite.exceptions import WebSocketDisconnect
from chanlite.types import ASGIApp, Message, Scope

__all__ = [
    "ClientDisconnected",
    "LifespanError",
    "ResponseHeaders",
    "TestClient",
    "TestResponse",
    "WebSocketRejected",
    "WebSocketTestSession",
]

logger = logging.getLogger("chanlite.testing")

HeaderInput: TypeAlias = "Mapping[str, str] | Sequence[tuple[str, str]]"
ParamInput: TypeAlias = "Mapping[str, Any] | Sequence[tuple[str, Any]]"
Content: TypeAlias = "bytes | str | Iterable[bytes] | AsyncIterable[bytes]"
# A file to upload: its bytes, (filename, bytes) or (filename, bytes, content type).
FileInput: TypeAlias = "bytes | tuple[str, bytes] | tuple[str, bytes, str]"

DEFAULT_TIMEOUT = 5.0
# How long an app may keep running after its client went away before it is cancelled.
DISCONNECT_GRACE = 1.0
# Messages the app may queue towards the test before its send() waits (backpressure, so a
# tight sending loop cannot starve the event loop or eat memory).
_BUFFER_LIMIT = 256
_ASGI = {"version": "3.0", "spec_version": "2.4"}


class ClientDisconnected(OSError):
    """Raised inside the app by ``send()`` once the test client has gone (ASGI spec 2.4).

    An app that ends with this error is treated as having finished normally.
    """


class LifespanError(RuntimeError):
    """The app reported ``lifespan.startup.failed`` / ``lifespan.shutdown.failed``."""


class ResponseHeaders(Mapping[str, str]):
    """Read-only, case-insensitive headers; a repeated name reads as its values joined by ", "."""

    def __init__(self, raw: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self.raw: list[tuple[bytes, bytes]] = [(bytes(k).lower(), bytes(v)) for k, v in raw]

    def get_list(self, key: str) -> list[str]:
        """Every value of *key*, in order (use this for ``set-cookie``)."""
        name = key.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self.raw if k == name]

    getlist = get_list

    def __getitem__(self, key: str) -> str:
        values = self.get_list(key)
        if not values:
            raise KeyError(key)
        return ", ".join(values)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k.decode("latin-1") for k, _ in self.raw))

    def __len__(self) -> int:
        return len({k for k, _ in self.raw})

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self.get_list(key))

    def __repr__(self) -> str:
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw]
        return f"ResponseHeaders({pairs!r})"


class TestResponse:
    """An HTTP response: ``status_code``, ``headers``, ``content``, ``text``, ``json()``.

    A response from ``client.stream(...)`` is read incrementally with ``aiter_bytes()``,
    ``aiter_text()`` or ``aiter_lines()`` (or all at once with ``await aread()``).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        status_code: int,
        headers: ResponseHeaders,
        content: bytes | None = None,
        *,
        stream: _HTTPExchange | None = None,
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self._content = content
        self._stream = stream
        self._consumed = content is not None
        self.history: list[TestResponse] = []  # redirects followed to get here

    @property
    def reason_phrase(self) -> str:
        try:
            return HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the streamed body has not been read: call `await response.aread()`")
        return self._content

    @property
    def encoding(self) -> str:
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"')
        return "utf-8"

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding, errors="replace")

    def json(self, **kwargs: Any) -> Any:
        """The body parsed as JSON."""
        return jsonlib.loads(self.content, **kwargs)

    async def aread(self) -> bytes:
        """Read the rest of a streamed body and return the whole of it."""
        if self._content is None:
            self._content = b"".join([chunk async for chunk in self.aiter_bytes()])
        return self._content

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Yield body chunks as the app sends them (each wait bounded by the timeout)."""
        if self._content is not None:
            if self._content:
                yield self._content
            return
        if self._consumed or self._stream is None:
            raise RuntimeError("the response body was already consumed")
        self._consumed = True
        while (chunk := await self._stream.next_chunk()) is not None:
            yield chunk

    async def aiter_text(self) -> AsyncIterator[str]:
        """Yield decoded text as it arrives."""
        import codecs

        decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")
        async for chunk in self.aiter_bytes():
            if text := decoder.decode(chunk):
                yield text
        if tail := decoder.decode(b"", final=True):
            yield tail

    async def aiter_lines(self) -> AsyncIterator[str]:
        """Yield lines (without their ``\\n`` / ``\\r\\n``) as they complete: handy for SSE."""
        pending = ""
        async for text in self.aiter_text():
            pending += text
            *lines, pending = pending.split("\n")
            for line in lines:
                yield line.removesuffix("\r")
        if pending:
            yield pending.removesuffix("\r")

    def __repr__(self) -> str:
        return f"<TestResponse [{self.status_code} {self.reason_phrase}]>"


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


class _AppCall:
    """One running call of the app: its task, a wake-up event for waiters, its error."""

    def __init__(
        self, client: TestClient, coro: Awaitable[None], label: str, timeout: float
    ) -> None:
        self.client = client
        self.label = label
        self.timeout = timeout
        self.deadline: float | None = None  # one budget for a whole request()
        self.changed = asyncio.Event()
        self.done = False
        self.reported = False
        self.on_done: Callable[[], None] | None = None
        self.task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.task.add_done_callback(self._finished)
        client._calls.add(self)

    def _finished(self, _: asyncio.Task[None]) -> None:
        self.done = True
        if self.on_done is not None:
            self.on_done()
        self.changed.set()

    async def wait_for(self, ready: Callable[[], bool], what: str, timeout: float | None) -> None:
        """Wait until ``ready()``; on timeout raise TimeoutError saying *what* did not happen."""
        limit = self.timeout if timeout is None else timeout
        end = time.monotonic() + limit
        if self.deadline is not None:
            end = min(end, self.deadline)
        while not ready():
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.label}: {what} within {limit:g}s")
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    def error(self) -> BaseException | None:
        if not self.task.done() or self.task.cancelled():
            return None
        exc = self.task.exception()
        return None if isinstance(exc, ClientDisconnected) else exc

    def report(self, missing: str | None = None) -> None:
        """Surface the app's exception (or a missing message) once: raise it, or log it."""
        exc = self.error()
        if self.reported or (exc is None and missing is None):
            return
        self.reported = True
        if exc is None:
            exc = RuntimeError(f"{self.label}: {missing}")
        if self.client.raise_server_exceptions:
            raise exc
        logger.error("Exception in ASGI application (%s)", self.label, exc_info=exc)

    async def finish(self, grace: float) -> None:
        """Let the app end by itself within *grace* seconds, then cancel it."""
        try:
            if not self.task.done() and grace > 0:
                await asyncio.wait({self.task}, timeout=grace)
            if not self.task.done():
                logger.debug("%s: cancelling the app, still running after %gs", self.label, grace)
                self.task.cancel()
                await asyncio.wait({self.task}, timeout=DISCONNECT_GRACE)
                if not self.task.done():
                    raise TimeoutError(f"{self.label}: the app ignored cancellation")
        finally:
            if self.task.done():
                self.client._calls.discard(self)
                self.error()  # marks the exception retrieved


def _check_headers(value: Any, label: str) -> list[tuple[bytes, bytes]]:
    try:
        pairs = [(k, v) for k, v in value]
    except (TypeError, ValueError):
        raise TypeError(f"{label}: headers must be an iterable of [name, value] pairs") from None
    for name, val in pairs:
        if not isinstance(name, bytes) or not isinstance(val, bytes):
            raise TypeError(f"{label}: header names and values must be bytes, got {(name, val)!r}")
    return [(k.lower(), v) for k, v in pairs]


async def _aiter_content(content: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(content, AsyncIterable):
        async for chunk in content:
            yield chunk
    else:
        for chunk in content:
            yield chunk


class _HTTPExchange:
    """One HTTP request/response between the test and the app."""

    def __init__(
        self, client: TestClient, scope: Scope, body: bytes | AsyncIterator[bytes], timeout: float
    ) -> None:
        self.label = f"{scope['method']} {scope['path']}"
        self.head = scope["method"] == "HEAD"
        self.status: int | None = None
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.complete = False  # the app sent more_body=False
        self.disconnected = False  # the test went away before the end
        self._body = body
        self._request_done = False
        self._finished = asyncio.Event()  # complete or disconnected: receive() -> http.disconnect
        self._drained = asyncio.Event()
        self.client = client
        self.call = _AppCall(
            client, client.app(scope, self._receive, self._send), self.label, timeout
        )

    async def _receive(self) -> Message:
        if not self._request_done:
            if isinstance(self._body, bytes):
                self._request_done = True
                return {"type": "http.request", "body": self._body, "more_body": False}
            try:
                chunk = await self._body.__anext__()
            except StopAsyncIteration:
                self._request_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if not isinstance(chunk, bytes):
                raise TypeError(f"request content chunks must be bytes, got {type(chunk).__name__}")
            return {"type": "http.request", "body": chunk, "more_body": True}
        await self._finished.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if self.disconnected:
            raise ClientDisconnected(f"{self.label}: the client disconnected")
        kind = message.get("type")
        if kind == "http.response.start":
            status = message.get("status")
            if self.status is not None:
                raise RuntimeError(f"{self.label}: http.response.start sent twice")
            if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status < 600:
                raise ValueError(f"{self.label}: bad status in http.response.start: {status!r}")
            self.raw_headers = _check_headers(message.get("headers", []), self.label)
            self.status = status
            self.client._store_cookies(ResponseHeaders(self.raw_headers))
        elif kind == "http.response.body":
            if self.status is None:
                raise RuntimeError(f"{self.label}: http.response.body sent before response.start")
            if self.complete:
                raise RuntimeError(
                    f"{self.label}: http.response.body sent after the response was complete "
                    "(an earlier message had more_body=False)"
                )
            body = message.get("body", b"")
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise TypeError(f"{self.label}: body must be bytes, got {type(body).__name__}")
            while len(self.chunks) >= _BUFFER_LIMIT and not self.disconnected:
                self._drained.clear()
                await self._drained.wait()
            if self.disconnected:
                raise ClientDisconnected(f"{self.label}: the client disconnected")
            if body and not self.head:
                self.chunks.append(bytes(body))
            if not message.get("more_body", False):
                self.complete = True
                self._finished.set()
        else:
            raise ValueError(f"{self.label}: unexpected ASGI message {kind!r} on an HTTP request")
        self.call.changed.set()

    async def start(self) -> TestResponse:
        """Wait for ``http.response.start``; a failed app gives 500 or raises its error."""
        call = self.call
        await call.wait_for(
            lambda: self.status is not None or call.done,
            "the app sent no http.response.start",
            None,
        )
        if self.status is None:
            call.report("the app returned without sending a response")
            self.complete = True
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            return TestResponse(500, ResponseHeaders(headers), b"Internal Server Error")
        return TestResponse(self.status, ResponseHeaders(self.raw_headers), stream=self)

    async def next_chunk(self) -> bytes | None:
        call = self.call
        await call.wait_for(
            lambda: bool(self.chunks) or self.complete or call.done,
            "the app did not send the rest of the response body",
            None,
        )
        if call.deadline is not None and time.monotonic() > call.deadline:
            raise TimeoutError(
                f"{self.label}: the response body did not end within {call.timeout:g}s "
                "(read endless responses with client.stream())"
            )
        if self.chunks:
            self._drained.set()
            return self.chunks.popleft()
        if not self.complete:
            call.report("the app returned before the end of the body (more_body=True)")
        return None

    async def close(self, exc: BaseException | None) -> None:
        """End the exchange: a complete response waits for the app to return (background
        work); otherwise the client disconnects and the app gets a grace period."""
        call = self.call
        try:
            if exc is None and self.complete:
                await call.wait_for(
                    lambda: call.done, "the app did not return after its response", None
                )
        finally:
            if not call.done and not self.complete:
                self.disconnected = True
                self._finished.set()
                self._drained.set()
            await call.finish(0 if exc is not None or self.complete else DISCONNECT_GRACE)
        if exc is None:
            call.report()
        elif call.error() is not None and not call.reported:
            logger.error("Exception in ASGI application (%s)", call.label, exc_info=call.error())


class _StreamContext(contextlib.AbstractAsyncContextManager[TestResponse]):
    """``async with client.stream(...) as response``: leaving the block disconnects."""

    def __init__(self, start: Callable[[], _HTTPExchange]) -> None:
        self._start = start
        self._exchange: _HTTPExchange | None = None

    async def __aenter__(self) -> TestResponse:
        self._exchange = exchange = self._start()
        try:
            return await exchange.start()
        except BaseException as exc:
            await exchange.close(exc)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._exchange is not None
        await self._exchange.close(exc)


class WebSocketTestSession:
    """One WebSocket connection to the app, opened by ``async with client.websocket(...)``.

    After the handshake: ``accepted_subprotocol`` and ``accept_headers``. Once either side
    has closed: ``close_code`` and ``close_reason``. If the app closes, the next
    ``receive_*`` raises ``WebSocketDisconnect`` (after the messages sent before the close);
    an app that crashes closes with 1011 and (with ``raise_server_exceptions``) its
    exception is raised by the next ``receive_*``, ``close()`` or the block's exit.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self, client: TestClient, scope: Scope, subprotocols: Sequence[str], timeout: float
    ) -> None:
        self.scope = scope
        self.accepted_subprotocol: str | None = None
        self.accept_headers = ResponseHeaders()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._client = client
        self._timeout = timeout
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
        self._call: _AppCall | None = None

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
            headers = _check_headers(message.get("headers", []), label)
            if any(name == b"sec-websocket-protocol" for name, _ in headers):
                raise ValueError(f"{label}: use the 'subprotocol' key, not a header")
            self.accepted_subprotocol = sub
            self.accept_headers = ResponseHeaders(headers)
            self._client._store_cookies(self.accept_headers)
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
            while len(self._from_app) >= _BUFFER_LIMIT and not self._client_closed:
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
            self._denial_headers = _check_headers(message.get("headers", []), label)
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
        client = self._client
        self._call = call = _AppCall(
            client, client.app(self.scope, self._receive, self._send), self._label, self._timeout
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
            await call.finish(DISCONNECT_GRACE)
            call.report("the app returned without accepting or rejecting the handshake")
            response = TestResponse(500, ResponseHeaders(), b"")
            raise WebSocketRejected(response)
        await call.finish(DISCONNECT_GRACE)
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
        await self._call.finish(DISCONNECT_GRACE)
        self._call.report()


_LIFESPAN_REPLIES = {
    "lifespan.startup.complete",
    "lifespan.startup.failed",
    "lifespan.shutdown.complete",
    "lifespan.shutdown.failed",
}
_BODY_METHODS = {"POST", "PUT", "PATCH"}
_REDIRECTS = {301, 302, 303, 307, 308}


def _encode_body(
    method: str,
    content: Content | None,
    json: Any,
    data: Mapping[str, Any] | None,
    files: Mapping[str, FileInput] | None,
) -> tuple[bytes | AsyncIterator[bytes], list[tuple[str, str]]]:
    """The request body and the headers that describe it."""
    form = data is not None or files is not None
    if (content is not None) + (json is not None) + form > 1:
        raise TypeError("pass at most one of content=, json= and data=/files=")
    body: bytes | AsyncIterator[bytes]
    headers: list[tuple[str, str]] = []
    if json is not None:
        body = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode()
        headers.append(("content-type", "application/json"))
    elif files:
        body, content_type = _multipart(data or {}, files)
        headers.append(("content-type", content_type))
    elif data is not None:
        body = urlencode(list(data.items()), doseq=True).encode()
        headers.append(("content-type", "application/x-www-form-urlencoded"))
    elif isinstance(content, str):
        body = content.encode()
    elif content is None or isinstance(content, (bytes, bytearray, memoryview)):
        body = bytes(content or b"")
    else:
        body = _aiter_content(content)
        headers.append(("transfer-encoding", "chunked"))
    if isinstance(body, bytes) and (body or method in _BODY_METHODS):
        headers.append(("content-length", str(len(body))))
    return body, headers


def _multipart(data: Mapping[str, Any], files: Mapping[str, FileInput]) -> tuple[bytes, str]:
    boundary = os.urandom(16).hex()

    def part(name: str, value: bytes, filename: str | None = None, ctype: str = "") -> bytes:
        quoted = name.replace('"', "%22")
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted}"'
        if filename is not None:
            head += f'; filename="{filename.replace(chr(34), "%22")}"'
        if ctype:
            head += f"\r\nContent-Type: {ctype}"
        return head.encode() + b"\r\n\r\n" + value + b"\r\n"

    parts = []
    for name, value in data.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            parts.append(part(name, str(item).encode()))
    for name, upload in files.items():
        if isinstance(upload, (bytes, bytearray)):
            upload = (name, bytes(upload))
        filename, payload = upload[0], upload[1]
        ctype = upload[2] if len(upload) > 2 else "application/octet-stream"
        parts.append(part(name, payload, filename, ctype))
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _header_items(headers: HeaderInput | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


def _merge_headers(base: list[tuple[str, str]], extra: HeaderInput | None) -> list[tuple[str, str]]:
    """*extra* replaces every header of *base* with a name it sets."""
    items = _header_items(extra)
    names = {name.lower() for name, _ in items}
    return [(k, v) for k, v in base if k.lower() not in names] + items


class TestClient:
    """Call any ASGI 3 app in-process: HTTP requests, streamed responses and WebSockets.

    ``async with TestClient(app) as client`` runs the app's lifespan (startup on enter,
    shutdown on exit); an app that raises on the lifespan scope is taken not to support
    it, like uvicorn's ``lifespan="auto"``. The client may also be used without
    ``async with``, in which case no lifespan runs.

    ``raise_server_exceptions``: an exception in the app is raised in the test (after the
    500 / close 1011 a server would have sent); with False the 500 response is returned.
    ``timeout`` bounds every wait for the app (per call, overridable per request).
    Cookies from ``set-cookie`` are kept in ``client.cookies`` and sent on later requests.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: ASGIApp,
        base_url: str = "http://testserver",
        raise_server_exceptions: bool = True,
        client: tuple[str, int] = ("testclient", 50000),
        *,
        root_path: str = "",
        headers: HeaderInput | None = None,
        cookies: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        follow_redirects: bool = False,
    ) -> None:
        self.app = app
        self.base_url = base_url
        self.raise_server_exceptions = raise_server_exceptions
        self.client = (client[0], int(client[1]))
        self.root_path = root_path
        self.headers = _header_items(headers)
        self.cookies: dict[str, str] = dict(cookies or {})
        self.timeout = timeout
        self.follow_redirects = follow_redirects
        self.lifespan_supported: bool | None = None  # known after entering
        self._state: dict[str, Any] | None = None
        self._calls: set[_AppCall] = set()
        self._lifespan: _AppCall | None = None
        self._lifespan_inbox: asyncio.Queue[Message] | None = None
        self._lifespan_replies: deque[Message] = deque()

    # -- lifespan ------------------------------------------------------------------------

    async def __aenter__(self) -> TestClient:
        if self._lifespan is not None:
            raise RuntimeError("this TestClient is already running its lifespan")
        state: dict[str, Any] = {}
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        replies = self._lifespan_replies
        replies.clear()
        received: list[bool] = []

        async def receive() -> Message:
            received.append(True)
            return await inbox.get()

        async def send(message: Message) -> None:
            if message.get("type") not in _LIFESPAN_REPLIES:
                raise ValueError(f"lifespan: unexpected ASGI message {message.get('type')!r}")
            replies.append(message)
            call.changed.set()

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = state
        call = _AppCall(self, self.app(scope, receive, send), "lifespan", self.timeout)
        inbox.put_nowait({"type": "lifespan.startup"})
        try:
            await call.wait_for(
                lambda: bool(replies) or call.done, "the app did not answer lifespan.startup", None
            )
        except BaseException:
            await call.finish(0)
            raise
        if not replies:
            await call.finish(0)
            exc = call.error()
            if not received:  # raised (or returned) on the scope itself: no lifespan support
                logger.debug("ASGI 'lifespan' protocol appears unsupported: %r", exc)
                self.lifespan_supported = False
                return self
            if exc is not None:
                raise exc
            raise LifespanError("lifespan: the app returned without lifespan.startup.complete")
        reply = replies.popleft()
        if reply["type"] != "lifespan.startup.complete":
            await call.finish(DISCONNECT_GRACE)
            if reply["type"] == "lifespan.startup.failed":
                raise LifespanError(f"lifespan startup failed: {reply.get('message', '')}")
            raise LifespanError(f"lifespan: {reply['type']} sent in answer to lifespan.startup")
        self.lifespan_supported = True
        self._lifespan, self._lifespan_inbox, self._state = call, inbox, state
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for call in [c for c in self._calls if c is not self._lifespan]:
                if not call.done:
                    logger.warning("%s: still running as the client closes; cancelling", call.label)
                await call.finish(0)
            if self._lifespan is not None:
                try:
                    await self._shutdown()
                except Exception:
                    if exc is None:
                        raise
                    logger.exception("lifespan shutdown failed while handling %r", exc)
        finally:
            self._lifespan = self._lifespan_inbox = self._state = None

    async def _shutdown(self) -> None:
        call, inbox, replies = self._lifespan, self._lifespan_inbox, self._lifespan_replies
        assert call is not None and inbox is not None
        if call.done:
            await call.finish(0)
            call.report()
            return
        inbox.put_nowait({"type": "lifespan.shutdown"})
        try:
            await call.wait_for(
                lambda: bool(replies) or call.done, "the app did not answer lifespan.shutdown", None
            )
        finally:
            await call.finish(DISCONNECT_GRACE if replies else 0)
        if replies and replies[0]["type"] == "lifespan.shutdown.failed":
            raise LifespanError(f"lifespan shutdown failed: {replies[0].get('message', '')}")
        if replies and replies[0]["type"] != "lifespan.shutdown.complete":
            raise LifespanError(f"lifespan: {replies[0]['type']} sent in answer to shutdown")
        exc = call.error()
        if exc is not None:
            raise exc

    # -- requests ------------------------------------------------------------------------

    def _scope(
        self,
        kind: str,
        path: str,
        params: ParamInput | None,
        headers: list[tuple[str, str]],
        cookies: Mapping[str, str] | None,
    ) -> Scope:
        base, target = urlsplit(self.base_url), urlsplit(path)
        scheme = (target.scheme or base.scheme or "http").lower()
        secure = scheme in ("https", "wss")
        netloc = target.netloc or base.netloc
        host = (target.hostname if target.netloc else base.hostname) or "testserver"
        port = (target.port if target.netloc else base.port) or (443 if secure else 80)
        prefix = "" if target.scheme else base.path.rstrip("/")
        raw = quote(prefix + "/" + target.path.lstrip("/"), safe="/%!$&'()*+,;=:@~")
        query = quote(target.query, safe="=&%+;/?:@!$'()*,~")
        if params:
            extra = urlencode(list(params.items()) if isinstance(params, Mapping) else params, True)
            query = f"{query}&{extra}" if query else extra
        sent = [("host", netloc), ("user-agent", "testclient")]
        sent += [("accept", "*/*")] if kind == "http" else []
        sent = _merge_headers(_merge_headers(sent, self.headers), headers)
        jar = {**self.cookies, **(cookies or {})}
        if jar and not any(name.lower() == "cookie" for name, _ in sent):
            sent.append(("cookie", "; ".join(f"{k}={v}" for k, v in jar.items())))
        scope: Scope = {
            "type": kind,
            "asgi": dict(_ASGI),
            "http_version": "1.1",
            "scheme": ("https" if secure else "http") if kind == "http" else "ws" + "s" * secure,
            "path": self.root_path + unquote(raw),
            "raw_path": raw.encode("ascii"),
            "root_path": self.root_path,
            "query_string": query.encode("ascii"),
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in sent],
            "client": self.client,
            "server": (host, port),
            "extensions": {},
        }
        if self._state is not None:
            scope["state"] = dict(self._state)
        return scope

    def _exchange(
        self,
        method: str,
        path: str,
        params: ParamInput | None,
        headers: HeaderInput | None,
        cookies: Mapping[str, str] | None,
        content: Content | None,
        json: Any,
        data: Mapping[str, Any] | None,
        files: Mapping[str, FileInput] | None,
        timeout: float | None,
    ) -> _HTTPExchange:
        method = method.upper()
        body, extra = _encode_body(method, content, json, data, files)
        sent = _merge_headers(extra, headers)
        scope = self._scope("http", path, params, sent, cookies)
        scope["method"] = method
        return _HTTPExchange(self, scope, body, self.timeout if timeout is None else timeout)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: ParamInput | None = None,
        headers: HeaderInput | None = None,
        cookies: Mapping[str, str] | None = None,
        content: Content | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, FileInput] | None = None,
        timeout: float | None = None,
        follow_redirects: bool | None = None,
    ) -> TestResponse:
        """Send one request and read the whole response.

        Also waits for the app to return (so work it does after responding has finished),
        all within *timeout* seconds (the client's ``timeout`` by default). ``data`` is sent
        form-urlencoded, or as multipart/form-data together with ``files``. With
        *follow_redirects* (the client's setting by default) 301/302/303/307/308 answers
        are followed, up to 20; the ones followed are in ``response.history``.
        """
        follow = self.follow_redirects if follow_redirects is None else follow_redirects
        history: list[TestResponse] = []
        base = urlsplit(self.base_url)
        url = path
        if not urlsplit(path).scheme:
            url = f"{base.scheme}://{base.netloc}{base.path.rstrip('/')}/{path.lstrip('/')}"
        while True:
            exchange = self._exchange(
                method, url, params, headers, cookies, content, json, data, files, timeout
            )
            exchange.call.deadline = time.monotonic() + exchange.call.timeout
            try:
                response = await exchange.start()
                await response.aread()
            except BaseException as exc:
                await exchange.close(exc)
                raise
            await exchange.close(None)
            location = response.headers.get("location")
            if not follow or response.status_code not in _REDIRECTS or location is None:
                response.history = history
                return response
            if len(history) == 20:
                raise RuntimeError(f"{method} {path}: more than 20 redirects")
            history.append(response)
            url, params = urljoin(url, location), None
            if response.status_code == 303 or (
                response.status_code in (301, 302) and method.upper() == "POST"
            ):
                method, content, json, data, files = "GET", None, None, None, None

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: ParamInput | None = None,
        headers: HeaderInput | None = None,
        cookies: Mapping[str, str] | None = None,
        content: Content | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, FileInput] | None = None,
        timeout: float | None = None,
    ) -> contextlib.AbstractAsyncContextManager[TestResponse]:
        """``async with client.stream("GET", "/sse") as response`` reads the body as it
        comes (``aiter_bytes/aiter_text/aiter_lines``); leaving the block sends
        ``http.disconnect`` to the app. *timeout* bounds each wait."""
        return _StreamContext(
            lambda: self._exchange(
                method, path, params, headers, cookies, content, json, data, files, timeout
            )
        )

    async def get(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("GET", path, **kwargs)

    async def head(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("HEAD", path, **kwargs)

    async def options(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("OPTIONS", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("DELETE", path, **kwargs)

    def websocket(
        self,
        path: str,
        *,
        subprotocols: Sequence[str] | None = None,
        headers: HeaderInput | None = None,
        params: ParamInput | None = None,
        cookies: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> WebSocketTestSession:
        """``async with client.websocket("/ws") as ws``: the handshake runs on entering
        (raising ``WebSocketRejected`` if the app refuses it), the exit closes with 1000."""
        offered = list(subprotocols or ())
        sent = [
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", base64.b64encode(os.urandom(16)).decode()),
            ("sec-websocket-version", "13"),
        ]
        if offered:
            sent.append(("sec-websocket-protocol", ", ".join(offered)))
        scope = self._scope("websocket", path, params, _merge_headers(sent, headers), cookies)
        scope["subprotocols"] = offered
        scope["extensions"] = {"websocket.http.response": {}}
        return WebSocketTestSession(
            self, scope, offered, self.timeout if timeout is None else timeout
        )

    def _store_cookies(self, headers: ResponseHeaders) -> None:
        for line in headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(line)
            except CookieError:
                logger.warning("ignoring a malformed set-cookie header: %r", line)
                continue
            for name, morsel in jar.items():
                if _expired(morsel["max-age"], morsel["expires"]):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value


def _expired(max_age: str, expires: str) -> bool:
    if max_age:
        try:
            return int(max_age) <= 0
        except ValueError:
            return False
    if expires:
        try:
            return parsedate_to_datetime(expires).timestamp() <= time.time()
        except (TypeError, ValueError):
            return False
    return False
