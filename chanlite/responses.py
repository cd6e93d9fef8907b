"""HTTP responses; each one is an ASGI application: ``await response(scope, receive, send)``.

``to_response`` turns whatever an HTTP handler returns into a ``Response``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import stat as stat_module
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from email.utils import format_datetime, formatdate
from mimetypes import guess_type
from typing import Any, BinaryIO, Literal
from urllib.parse import quote

from chanlite.datastructures import MutableHeaders
from chanlite.encoders import JSONDefault, dumps
from chanlite.exceptions import SlowConsumer
from chanlite.types import Message, Receive, Scope, Send

__all__ = [
    "FileResponse",
    "HTMLResponse",
    "JSONResponse",
    "PlainTextResponse",
    "RedirectResponse",
    "Response",
    "StreamingResponse",
    "file_etag",
    "format_sse",
    "to_response",
]

_NO_BODY_STATUSES = frozenset({204, 304})


@functools.lru_cache(maxsize=64)
def _content_type(media_type: str, charset: str) -> bytes:
    """The ``content-type`` value for *media_type*, with a charset for ``text/*`` types."""
    if media_type.startswith("text/") and "charset=" not in media_type.lower():
        media_type += f"; charset={charset}"
    return media_type.encode("latin-1")


class Response:
    """A complete HTTP response with a body known up front.

    *content* is bytes or str (encoded with ``charset``). ``content-length`` is set for you;
    ``content-type`` from *media_type*, with ``; charset=utf-8`` for ``text/*`` types.
    """

    media_type: str | None = None
    charset = "utf-8"

    def __init__(
        self,
        content: bytes | str | None = b"",
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        self.status_code = status_code
        if media_type is not None:
            self.media_type = media_type
        self.body = self.render(content)
        self._headers = MutableHeaders.empty() if headers is None else MutableHeaders(headers)
        self._init_headers()

    def render(self, content: Any) -> bytes:
        """Encode *content* to the body bytes."""
        if content is None:
            return b""
        if isinstance(content, bytes | bytearray | memoryview):
            return bytes(content)
        if isinstance(content, str):
            return content.encode(self.charset)
        raise TypeError(
            f"{type(self).__name__} content must be bytes or str, not {type(content).__name__}"
        )

    def _init_headers(self, content_length: bool = True) -> None:
        headers = self._headers
        if not headers.raw:
            # Nothing from the caller (the common case): append the trusted pairs directly,
            # skipping the per-header search and CR/LF check that user values need.
            raw = headers.raw
            if content_length and not (
                self.status_code < 200 or self.status_code in _NO_BODY_STATUSES
            ):
                raw.append((b"content-length", b"%d" % len(self.body)))
            if self.media_type is not None:
                raw.append((b"content-type", _content_type(self.media_type, self.charset)))
            return
        if (
            content_length
            and "content-length" not in headers
            and not (self.status_code < 200 or self.status_code in _NO_BODY_STATUSES)
        ):
            headers["content-length"] = str(len(self.body))
        if self.media_type is not None and "content-type" not in headers:
            content_type = self.media_type
            if content_type.startswith("text/") and "charset=" not in content_type.lower():
                content_type += f"; charset={self.charset}"
            headers["content-type"] = content_type

    @property
    def headers(self) -> MutableHeaders:
        """The response headers; change them before the response is sent."""
        return self._headers

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as the ASGI byte pairs that will be sent."""
        return self._headers.raw

    def set_cookie(
        self,
        key: str,
        value: str = "",
        *,
        max_age: int | None = None,
        expires: datetime | int | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
    ) -> None:
        """Add a ``Set-Cookie`` header. *expires* is a datetime or seconds from now."""
        from http.cookies import SimpleCookie

        cookie: SimpleCookie = SimpleCookie()
        cookie[key] = value
        morsel = cookie[key]
        if max_age is not None:
            morsel["max-age"] = str(max_age)
        if isinstance(expires, datetime):
            morsel["expires"] = format_datetime(expires.astimezone(timezone.utc), usegmt=True)
        elif expires is not None:
            morsel["expires"] = expires
        if path is not None:
            morsel["path"] = path
        if domain is not None:
            morsel["domain"] = domain
        if secure:
            morsel["secure"] = True
        if httponly:
            morsel["httponly"] = True
        if samesite is not None:
            if samesite.lower() not in ("lax", "strict", "none"):
                raise ValueError("samesite must be 'lax', 'strict' or 'none'")
            morsel["samesite"] = samesite
        self._headers.append("set-cookie", morsel.OutputString())

    def delete_cookie(
        self,
        key: str,
        *,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
    ) -> None:
        """Tell the client to drop cookie *key* (same *path*/*domain* as when it was set)."""
        self.set_cookie(
            key,
            max_age=0,
            expires=0,
            path=path,
            domain=domain,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
            }
        )
        # HEAD: headers (content-length included) but no body bytes.
        body = b"" if scope.get("method") == "HEAD" else self.body
        await send({"type": "http.response.body", "body": body})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status_code} {self.media_type!r}>"


class PlainTextResponse(Response):
    """A ``text/plain; charset=utf-8`` response."""

    media_type = "text/plain"


class HTMLResponse(Response):
    """A ``text/html; charset=utf-8`` response."""

    media_type = "text/html"


class JSONResponse(Response):
    """*content* serialised as compact UTF-8 JSON (``application/json``)."""

    media_type = "application/json"

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        *,
        default: JSONDefault | None = None,
    ) -> None:
        self._default = default
        super().__init__(content, status_code, headers, media_type)

    def render(self, content: Any) -> bytes:
        """Serialise *content* (datetime, UUID, Decimal, dataclasses... through *default*,
        else :func:`chanlite.encoders.json_default`); anything else raises ``TypeError``."""
        return _json_bytes(content, getattr(self, "_default", None))


def _json_bytes(content: Any, default: JSONDefault | None = None) -> bytes:
    return dumps(content, default).encode("utf-8")


class RedirectResponse(Response):
    """Redirect to *url* (``307`` keeps the method; use ``303`` after a POST form)."""

    def __init__(
        self,
        url: str,
        status_code: int = 307,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(b"", status_code, headers)
        # Keep what is already a valid URL; escape spaces and non-ASCII.
        self._headers["location"] = quote(url, safe=":/%#?=@[]!$&'()*+,;~")


ContentStream = AsyncIterable[str | bytes] | Iterable[str | bytes]


class StreamingResponse(Response):
    """A body produced piece by piece from an async or sync iterator of str/bytes.

    No ``content-length`` is sent (the server uses chunked encoding). The response stops
    when the iterator ends (or raises :class:`~chanlite.exceptions.SlowConsumer`: the
    subscription feeding it was ended) or the client disconnects; then an async generator
    is closed so its ``finally`` blocks run. Sync iterators are advanced on a worker thread.

    Server-sent events: ``StreamingResponse(events(), media_type="text/event-stream")``
    where ``events()`` yields ``format_sse(...)`` strings.
    """

    def __init__(
        self,
        content: ContentStream,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        self.status_code = status_code
        if media_type is not None:
            self.media_type = media_type
        self.body = b""
        self.body_iterator = content
        self._headers = MutableHeaders(headers)
        self._init_headers(content_length=False)
        if self.media_type is not None and self.media_type.startswith("text/event-stream"):
            # Proxies and browsers must not cache or buffer an event stream.
            self._headers.setdefault("cache-control", "no-cache")
            self._headers.setdefault("x-accel-buffering", "no")

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        content = self.body_iterator
        if isinstance(content, AsyncIterable):
            async for chunk in content:
                yield chunk if isinstance(chunk, bytes) else chunk.encode(self.charset)
        else:
            iterator: Iterator[str | bytes] = iter(content)
            while True:
                chunk, finished = await asyncio.to_thread(_next_chunk, iterator)
                if finished:
                    break
                yield chunk if isinstance(chunk, bytes) else chunk.encode(self.charset)

    async def _stream(self, send: Send, head_only: bool) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if not head_only:
            chunks = self._chunks()
            try:
                async for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except SlowConsumer:
                # The subscription feeding the stream was ended (counted and logged once):
                # the client's reader is too slow. End the response; it may reconnect.
                pass
            finally:
                await chunks.aclose()
        await send({"type": "http.response.body", "body": b""})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        head_only = scope.get("method") == "HEAD"
        streamer = asyncio.ensure_future(self._stream(send, head_only))
        listener = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({streamer, listener}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streamer, listener):
                task.cancel()
            await asyncio.wait({streamer, listener})
            await self._close_iterator()
        if not streamer.cancelled():
            # Servers may raise OSError from send() once the client is gone: not an error.
            with contextlib.suppress(OSError):
                streamer.result()
        if not listener.cancelled():
            listener.result()

    async def _close_iterator(self) -> None:
        aclose = getattr(self.body_iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        else:
            close = getattr(self.body_iterator, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()


def _next_chunk(iterator: Iterator[str | bytes]) -> tuple[str | bytes, bool]:
    # StopIteration cannot cross a thread/future boundary, so report the end as a flag.
    try:
        return next(iterator), False
    except StopIteration:
        return b"", True


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def format_sse(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> str:
    """Format one server-sent event; multi-line *data* becomes several ``data:`` lines.

    >>> format_sse("hi\\nthere", event="greet", id="1")
    'event: greet\\nid: 1\\ndata: hi\\ndata: there\\n\\n'
    """
    lines: list[str] = []
    if comment is not None:
        lines.extend(f": {line}" for line in comment.splitlines() or [""])
    for field, value in (("event", event), ("id", id)):
        if value is not None:
            if "\n" in value or "\r" in value:
                raise ValueError(f"SSE {field} must be a single line")
            lines.append(f"{field}: {value}")
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    if data is not None:
        lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return "\n".join(lines) + "\n\n"


class FileResponse(Response):
    """Send the file at *path*, streamed in chunks read on a worker thread.

    Sets ``content-length``, ``last-modified`` and ``etag``; answers ``HEAD`` with headers
    only. *filename* adds a ``content-disposition: attachment`` header. A missing path is
    a ``RuntimeError`` when the response is sent (check first if the path comes from a user).
    """

    chunk_size = 64 * 1024

    def __init__(
        self,
        path: str | os.PathLike[str],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        filename: str | None = None,
        stat_result: os.stat_result | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.status_code = status_code
        self.filename = filename
        if media_type is None:
            media_type = guess_type(filename or self.path)[0] or "application/octet-stream"
        self.media_type = media_type
        self.body = b""
        self._headers = MutableHeaders(headers)
        self._init_headers(content_length=False)
        if filename is not None:
            quoted = quote(filename)
            if quoted != filename:
                disposition = f"attachment; filename*=utf-8''{quoted}"
            else:
                disposition = f'attachment; filename="{filename}"'
            self._headers.setdefault("content-disposition", disposition)
        self.stat_result = stat_result
        if stat_result is not None:
            self._set_stat_headers(stat_result)

    def _set_stat_headers(self, st: os.stat_result) -> None:
        headers = self._headers
        headers.setdefault("content-length", str(st.st_size))
        headers.setdefault("last-modified", formatdate(st.st_mtime, usegmt=True))
        headers.setdefault("etag", file_etag(st))
        if self.status_code == 200:
            headers.setdefault("accept-ranges", "bytes")

    def _apply_range(self, scope: Scope, size: int) -> tuple[int, int]:
        """``(offset, length)`` to send: the whole file, or the one byte range the request
        asks for (206 with ``content-range``; 416 when it lies outside the file). Several
        ranges, a malformed one or an ``If-Range`` that no longer matches get the whole
        file, as RFC 9110 allows."""
        if self.status_code != 200 or scope.get("method") not in ("GET", "HEAD"):
            return 0, size
        wanted = if_range = None
        for name, value in scope.get("headers", ()):
            if name == b"range":
                wanted = value.decode("latin-1").strip()
            elif name == b"if-range":
                if_range = value.decode("latin-1").strip()
        if wanted is None:
            return 0, size
        if if_range is not None and if_range not in (
            self._headers.get("etag"),
            self._headers.get("last-modified"),
        ):
            return 0, size  # the file changed since the client's copy: send all of it
        unit, _, spec = wanted.partition("=")
        if unit.strip().lower() != "bytes" or "," in spec:
            return 0, size
        first, dash, last = spec.strip().partition("-")
        try:
            if not dash:
                return 0, size
            if first:
                start = int(first)
                end = int(last) if last else size - 1
            else:  # a suffix: the last N bytes
                start, end = max(size - int(last), 0), size - 1
        except ValueError:
            return 0, size
        headers = self._headers
        if start >= size or (not first and int(last) == 0):
            self.status_code = 416
            headers["content-range"] = f"bytes */{size}"
            headers["content-length"] = "0"
            return 0, 0
        if end < start:
            return 0, size  # malformed ("bytes=9-3"): ignored
        end = min(end, size - 1)
        self.status_code = 206
        headers["content-range"] = f"bytes {start}-{end}/{size}"
        headers["content-length"] = str(end - start + 1)
        return start, end - start + 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.stat_result is None:
            try:
                st = await asyncio.to_thread(os.stat, self.path)
            except FileNotFoundError:
                raise RuntimeError(f"File at path {self.path!r} does not exist.") from None
            if not stat_module.S_ISREG(st.st_mode):
                raise RuntimeError(f"Path {self.path!r} is not a regular file.")
            self.stat_result = st
            self._set_stat_headers(st)
        offset, remaining = self._apply_range(scope, self.stat_result.st_size)
        head_only = (
            scope.get("method") == "HEAD"
            or self.status_code in _NO_BODY_STATUSES
            or self.status_code == 416
        )
        pathsend = self.status_code == 200 and "http.response.pathsend" in scope.get(
            "extensions", {}
        )
        file: BinaryIO | None = None
        if not (head_only or pathsend):
            # Open before the status line goes out, so a vanished file is still a clean error.
            try:
                file = await asyncio.to_thread(open, self.path, "rb")
            except OSError as exc:
                raise RuntimeError(f"Cannot open file at path {self.path!r}: {exc}") from None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            if file is None:
                if pathsend and not head_only:
                    await send({"type": "http.response.pathsend", "path": self.path})
                else:
                    await send({"type": "http.response.body", "body": b""})
                return
            # Send exactly the advertised content-length, even if the file changes meanwhile.
            if offset:
                await asyncio.to_thread(file.seek, offset)
            while remaining > 0:
                chunk = await asyncio.to_thread(file.read, min(self.chunk_size, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            if file is not None:
                await asyncio.to_thread(file.close)


def file_etag(st: os.stat_result) -> str:
    """A strong ETag from a file's size and modification time (no content read)."""
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def to_response(value: Any, json_default: JSONDefault | None = None) -> Response:
    """Turn an HTTP handler's return value into a ``Response``.

    ``Response`` as is; ``dict``/``list`` -> JSON; ``str`` -> text/plain; ``bytes`` ->
    application/octet-stream; ``None`` -> 204 with no body; ``(body, status)`` or
    ``(body, status, headers)`` -> the body converted as above with that status and headers.
    Anything else is a ``TypeError`` naming the type.
    """
    if not isinstance(value, tuple):
        return _convert(value, None, json_default)
    if len(value) not in (2, 3) or not isinstance(value[1], int) or isinstance(value[1], bool):
        raise TypeError(
            "A tuple returned from an HTTP handler must be (body, status) or"
            f" (body, status, headers) with an int status; got {_describe(value)} of"
            f" length {len(value)}."
        )
    response = _convert(value[0], value[1], json_default)
    if len(value) == 3:
        headers = value[2]
        if not isinstance(headers, Mapping):
            raise TypeError(
                "The headers in a returned (body, status, headers) tuple must be a mapping,"
                f" not {_describe(headers)}."
            )
        response.headers.update(headers)
    return response


_TEXT_TYPE = (b"content-type", _content_type(PlainTextResponse.media_type, Response.charset))
_JSON_TYPE = (b"content-type", _content_type(JSONResponse.media_type, Response.charset))


def plain_messages(
    value: Any, method: str, json_default: JSONDefault | None = None
) -> tuple[Message, Message] | None:
    """The ``http.response.start`` and ``http.response.body`` messages ``to_response``
    would send for a returned ``str``, ``dict`` or ``list``, built without a Response
    object (the common returns, on every request's path); None for any other value.

    Raises ``TypeError`` for a dict or list JSON cannot represent, as ``JSONResponse``.
    """
    cls = value.__class__
    if cls is str:
        body = value.encode("utf-8")
        content_type = _TEXT_TYPE
    elif cls is dict or cls is list:
        body = _json_bytes(value, json_default)
        content_type = _JSON_TYPE
    else:
        return None
    headers = [(b"content-length", b"%d" % len(body)), content_type]
    return (
        {"type": "http.response.start", "status": 200, "headers": headers},
        {"type": "http.response.body", "body": b"" if method == "HEAD" else body},
    )


def _convert(value: Any, status: int | None, json_default: JSONDefault | None = None) -> Response:
    if value.__class__ is str:  # the most common return, checked first
        return PlainTextResponse(value, status or 200)
    if isinstance(value, Response):
        if status is not None:
            value.status_code = status
        return value
    if isinstance(value, dict | list):
        return JSONResponse(value, status or 200, default=json_default)
    if isinstance(value, str):
        return PlainTextResponse(value, status or 200)
    if isinstance(value, bytes | bytearray | memoryview):
        return Response(bytes(value), status or 200, media_type="application/octet-stream")
    if value is None:
        return Response(b"", status or 204)
    raise TypeError(
        f"An HTTP handler returned {_describe(value)}; return a Response, dict, list, str,"
        " bytes, None, or a (body, status) / (body, status, headers) tuple."
    )


def _describe(value: Any) -> str:
    return f"a value of type {type(value).__name__!r}"
