"""HTTP for the test client: the response object, its headers and one request/response.

``_HTTPExchange`` plays the server's side of one request: it feeds the request body to the
app, collects ``http.response.*`` messages and hands the body to the test as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import os
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from types import TracebackType
from typing import Any, TypeAlias
from urllib.parse import urlencode

from chanlite.testing._call import (
    BUFFER_LIMIT,
    AppCall,
    ClientDisconnected,
    Session,
    check_headers,
    logger,
)
from chanlite.types import Message, Scope

__all__ = ["ResponseHeaders", "TestResponse"]

Content: TypeAlias = "bytes | str | Iterable[bytes] | AsyncIterable[bytes]"
# A file to upload: its bytes, (filename, bytes) or (filename, bytes, content type).
FileInput: TypeAlias = "bytes | tuple[str, bytes] | tuple[str, bytes, str]"

_BODY_METHODS = {"POST", "PUT", "PATCH"}


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


async def _aiter_content(content: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(content, AsyncIterable):
        async for chunk in content:
            yield chunk
    else:
        for chunk in content:
            yield chunk


class _HTTPExchange:
    """One HTTP request/response between the test and the app."""

    def __init__(self, session: Session, scope: Scope, body: bytes | AsyncIterator[bytes]) -> None:
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
        self._last_chunk: float | None = None  # when the app last sent body bytes
        self.session = session
        self.call = AppCall(session, session.app(scope, self._receive, self._send), self.label)

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
            self.raw_headers = check_headers(message.get("headers", []), self.label)
            self.status = status
            self.session.store_cookies(self.raw_headers)
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
            while len(self.chunks) >= BUFFER_LIMIT and not self.disconnected:
                self._drained.clear()
                await self._drained.wait()
            if self.disconnected:
                raise ClientDisconnected(f"{self.label}: the client disconnected")
            if body and not self.head:
                self.chunks.append(bytes(body))
                self._last_chunk = time.monotonic()
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
        try:
            await call.wait_for(
                lambda: bool(self.chunks) or self.complete or call.done,
                "the app did not send the rest of the response body",
                None,
            )
        except TimeoutError:
            # The whole-request budget ran out while waiting. If chunks were still coming
            # the body is endless rather than stalled: say so, with the way out.
            last = self._last_chunk
            if last is not None and time.monotonic() - last < call.timeout / 2:
                raise self._endless() from None
            raise
        if call.deadline is not None and time.monotonic() > call.deadline:
            raise self._endless()
        if self.chunks:
            self._drained.set()
            return self.chunks.popleft()
        if not self.complete:
            call.report("the app returned before the end of the body (more_body=True)")
        return None

    def _endless(self) -> TimeoutError:
        return TimeoutError(
            f"{self.label}: the response body did not end within {self.call.timeout:g}s "
            "(read endless responses with client.stream())"
        )

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
            await call.finish(0 if exc is not None or self.complete else self.session.grace)
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
