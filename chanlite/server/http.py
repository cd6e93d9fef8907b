"""HTTP/1.1 as a protocol: bytes in, events out; ASGI response messages in, bytes out.

Nothing here touches a socket, a loop or a clock (the ``Date`` value is passed in).
:class:`RequestParser` wraps httptools (llhttp), adds the limits llhttp lacks (request-line
length, header count and bytes) and the smuggling checks the server insists on; the
asyncio glue in :mod:`chanlite.server.connection` feeds it and acts on the events.
:class:`ResponseFramer` turns ``http.response.*`` messages into wire bytes, choosing
``Content-Length`` or chunked framing and keep-alive.
"""

from __future__ import annotations

import http
import re
import urllib.parse
from collections.abc import Iterable

import httptools

Headers = list[tuple[bytes, bytes]]

_STATUS_LINES = {
    int(status): f"HTTP/1.1 {int(status)} {status.phrase}\r\n".encode("latin-1")
    for status in http.HTTPStatus
}
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")


def _header_names(*canonical: str) -> dict[bytes, bytes]:
    """Each name as clients usually spell it (canonical, lower, Title-Case) -> lower."""
    names: dict[bytes, bytes] = {}
    for name in canonical:
        lower = name.lower().encode()
        for spelling in (name, name.lower(), name.title()):
            names[spelling.encode()] = lower
    return names


_HEADER_NAMES = _header_names(
    "Host", "Connection", "Upgrade", "User-Agent", "Accept", "Accept-Encoding",
    "Accept-Language", "Cache-Control", "Pragma", "Origin", "Cookie", "Referer",
    "Authorization", "Content-Type", "Content-Length", "Transfer-Encoding", "Expect",
    "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Protocol", "X-Forwarded-For", "X-Forwarded-Proto", "X-Real-IP",
    "If-None-Match", "If-Modified-Since", "Keep-Alive", "Sec-Fetch-Mode", "Sec-Fetch-Site",
    "Sec-Fetch-Dest",
)  # fmt: skip


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


class RequestHead:
    """The request line and headers of one request (``upgrade`` set for a WebSocket)."""

    __slots__ = (
        "expect_continue",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query",
        "raw_path",
        "target",
        "websocket",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        raw_path: bytes,
        query: bytes,
        http_version: str,
        headers: Headers,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.raw_path = raw_path
        path = raw_path.decode("ascii", "surrogateescape")
        self.path = urllib.parse.unquote(path) if b"%" in raw_path else path
        self.query = query
        self.http_version = http_version
        self.headers = headers
        self.keep_alive = keep_alive
        self.expect_continue = False
        self.websocket = False


class Body:
    """A piece of the request body (already de-chunked)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class MessageEnd:
    """The request body is complete."""

    __slots__ = ()


class Upgrade:
    """A WebSocket upgrade request; HTTP parsing stops and ``trailing`` bytes follow it."""

    __slots__ = ("head", "trailing")

    def __init__(self, head: RequestHead, trailing: bytes) -> None:
        self.head = head
        self.trailing = trailing


class BadRequest:
    """Malformed or refused input: answer with ``status`` and close."""

    __slots__ = ("reason", "status")

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


Event = RequestHead | Body | MessageEnd | Upgrade | BadRequest
MESSAGE_END = MessageEnd()


class _Reject(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RequestParser:
    """Incremental request parser: :meth:`feed` bytes, get a list of events back.

    After a :class:`BadRequest` or :class:`Upgrade` event the parser is finished and
    further data is ignored.
    """

    __slots__ = (
        "_cl_seen",
        "_events",
        "_has_body",
        "_header_bytes",
        "_headers",
        "_in_headers",
        "_parser",
        "_reject",
        "_te",
        "_url",
        "done",
        "limit_fields",
        "limit_header_size",
        "limit_line",
    )

    def __init__(
        self,
        limit_line: int = 8190,
        limit_fields: int = 100,
        limit_header_size: int = 32768,
    ) -> None:
        self.limit_line = limit_line
        self.limit_fields = limit_fields
        self.limit_header_size = limit_header_size
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._url = b""
        self._headers: Headers = []
        self._header_bytes = 0
        self._in_headers = False
        self._cl_seen = False
        self._has_body = False
        self._te: bytes | None = None
        self._reject: _Reject | None = None
        self.done = False

    @property
    def mid_request(self) -> bool:
        """True while a request's head has started but not finished arriving."""
        return self._in_headers

    def feed(self, data: bytes) -> list[Event]:
        """Parse *data*; return the events it completed."""
        if self.done:
            return []
        events = self._events
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self._upgrade(data[offset:])
        except httptools.HttpParserError as exc:
            if self._reject is not None:
                events.append(BadRequest(self._reject.status, self._reject.reason))
            else:
                events.append(BadRequest(400, f"Invalid HTTP request: {exc}"))
            self.done = True
        else:
            if self._in_headers:
                # llhttp buffers an unfinished header line itself, without limit.
                self._header_bytes += len(data)
                if self._header_bytes > self.limit_header_size + self.limit_line:
                    events.append(BadRequest(431, "Request header fields too large"))
                    self.done = True
        self._events = []
        return events

    def _upgrade(self, trailing: bytes) -> None:
        events = self._events
        head = None
        # The head was held back in on_headers_complete when it asked for a WebSocket.
        for index, event in enumerate(events):
            if isinstance(event, RequestHead) and event.websocket:
                head = event
                del events[index:]
                break
        self.done = True
        if head is not None:
            events.append(Upgrade(head, trailing))
        # Another protocol (h2c, ...): the request was answered as plain HTTP already; the
        # connection closes after the response because keep_alive was cleared.

    # httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._in_headers = True
        self._cl_seen = False
        self._has_body = False
        self._te = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limit_line:
            self._fail(414, "Request-URI too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if len(self._headers) >= self.limit_fields:
            self._fail(431, "Too many request header fields")
        if self._header_bytes > self.limit_header_size:
            self._fail(431, "Request header fields too large")
        # Common names map to one shared lower-case bytes object: no new object per header
        # per request, and an idle WebSocket's scope["headers"] holds fewer of them.
        lname = _HEADER_NAMES.get(name) or name.lower()
        if lname == b"content-length":
            if self._cl_seen:
                self._fail(400, "Duplicate Content-Length")
            self._cl_seen = True
            try:
                self._has_body = int(value) > 0
            except ValueError:
                self._has_body = True  # llhttp refuses it anyway
        elif lname == b"transfer-encoding":
            if self._te is not None:
                self._fail(400, "Duplicate Transfer-Encoding")
            self._te = value.lower()
        self._headers.append((lname, value))

    def on_headers_complete(self) -> None:
        self._in_headers = False
        parser = self._parser
        if self._te is not None:
            if self._cl_seen:
                self._fail(400, "Content-Length with Transfer-Encoding")
            if self._te.rsplit(b",", 1)[-1].strip() != b"chunked":
                self._fail(400, "Unsupported Transfer-Encoding")
        target = self._url
        if target == b"*":
            raw_path, query = b"*", b""
        else:
            try:
                parsed = httptools.parse_url(target)
            except httptools.HttpParserInvalidURLError:
                self._fail(400, "Invalid request target")
            raw_path = parsed.path or b"/"
            query = parsed.query or b""
        method = parser.get_method().decode("ascii")
        upgrade = parser.should_upgrade()
        head = RequestHead(
            method,
            target,
            raw_path,
            query,
            parser.get_http_version(),
            self._headers,
            parser.should_keep_alive() and not upgrade,
        )
        for name, value in self._headers:
            if name == b"expect" and value.lower() == b"100-continue":
                head.expect_continue = True
            elif upgrade and name == b"upgrade" and value.lower() == b"websocket":
                head.websocket = method == "GET"
        if head.websocket and (self._has_body or self._te is not None):
            # What follows the head would be read as WebSocket frames (RFC 6455 4.1: the
            # handshake is a GET; a body has no place in it).
            self._fail(400, "WebSocket upgrade request with a body")
        self._events.append(head)

    def on_body(self, body: bytes) -> None:
        self._events.append(Body(body))

    def on_message_complete(self) -> None:
        events = self._events
        if events and isinstance(events[-1], RequestHead) and events[-1].websocket:
            return  # the Upgrade event replaces the end of this message
        events.append(MESSAGE_END)

    def _fail(self, status: int, reason: str) -> None:
        self._reject = _Reject(status, reason)
        raise self._reject


class ResponseError(RuntimeError):
    """The application sent an invalid ``http.response.*`` message."""


_NO_BODY = frozenset({204, 304})


class ResponseFramer:
    """Frames one response: decides ``Content-Length``/chunked and keep-alive.

    ``keep_alive`` is the request's wish on entry and the final answer after
    :meth:`head`; the caller closes the connection when it is False.
    """

    __slots__ = ("chunked", "complete", "head_request", "keep_alive", "remaining", "status")

    def __init__(self, head_request: bool, keep_alive: bool) -> None:
        self.head_request = head_request
        self.keep_alive = keep_alive
        self.chunked = False
        self.remaining: int | None = None
        self.complete = False
        self.status = 0

    def head(
        self,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        default_headers: bytes,
        final_length: int | None,
        http11: bool,
    ) -> bytes:
        """Return the status line and headers; *final_length* is the whole body's length
        when the first body message is also the last, else None."""
        self.status = status
        out = [status_line(status), default_headers]
        content_length = None
        has_te = False
        for name, value in headers:
            if not isinstance(name, bytes) or not isinstance(value, bytes):
                raise ResponseError("response header names and values must be bytes")
            if not _TOKEN.match(name) or _BAD_VALUE.search(value):
                raise ResponseError(f"invalid response header {name!r}: {value!r}")
            lname = name.lower()
            if lname == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    raise ResponseError(f"invalid Content-Length {value!r}") from None
                continue  # written once, below, after the framing decision
            elif lname == b"transfer-encoding":
                has_te = True
                continue  # framing is the server's job
            elif lname == b"connection" and value.lower() == b"close":
                self.keep_alive = False
                continue
            out.append(b"%s: %s\r\n" % (name, value))
        no_body = status < 200 or status in _NO_BODY
        if content_length is not None:
            if not no_body:
                self.remaining = content_length
            out.append(b"content-length: %d\r\n" % content_length)
        elif no_body:
            pass
        elif final_length is not None and not (self.head_request and has_te):
            self.remaining = final_length
            out.append(b"content-length: %d\r\n" % final_length)
        elif http11:
            self.chunked = True
            out.append(b"transfer-encoding: chunked\r\n")
        else:
            self.keep_alive = False  # HTTP/1.0: the end of the body is the end of the stream
        if self.head_request or no_body:
            self.chunked = False
            self.remaining = None
        if not self.keep_alive:
            out.append(b"connection: close\r\n")
        elif not http11:
            out.append(b"connection: keep-alive\r\n")  # HTTP/1.0 closes unless told
        out.append(b"\r\n")
        return b"".join(out)

    def body(self, data: bytes, more_body: bool) -> bytes:
        """Return the wire bytes for one ``http.response.body`` message."""
        if self.complete:
            raise ResponseError("response already complete")
        if not more_body:
            self.complete = True
        if self.head_request or self.status < 200 or self.status in _NO_BODY:
            return b""
        if self.chunked:
            if data:
                chunk = b"%x\r\n%s\r\n" % (len(data), data)
                return chunk + b"0\r\n\r\n" if not more_body else chunk
            return b"0\r\n\r\n" if not more_body else b""
        if self.remaining is not None:
            self.remaining -= len(data)
            if self.remaining < 0:
                raise ResponseError("response body longer than its Content-Length")
            if not more_body and self.remaining:
                raise ResponseError("response body shorter than its Content-Length")
        return data


def default_headers(date: bytes | None, server: bool) -> bytes:
    """The ``date``/``server`` header block added to every response."""
    out = b""
    if date is not None:
        out += b"date: " + date + b"\r\n"
    if server:
        out += b"server: chanlite\r\n"
    return out


def simple_response(status: int, text: str, default: bytes) -> bytes:
    """A complete plain-text response that closes the connection (errors, 503)."""
    body = text.encode("utf-8")
    return (
        status_line(status)
        + default
        + b"content-type: text/plain; charset=utf-8\r\n"
        + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        + body
    )
