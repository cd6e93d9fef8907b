"""Connection objects over an ASGI scope: ``HTTPConnection`` and ``Request``.

``HTTPConnection`` holds what HTTP requests and WebSockets share (path, headers, query,
cookies, client, state). It keeps only the scope plus lazily filled caches in slots, so an
idle WebSocket costs little memory.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any
from urllib.parse import parse_qsl, quote

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from chanlite.datastructures import (
    Address,
    FormData,
    Headers,
    QueryParams,
    UploadFile,
    parse_cookies,
)
from chanlite.exceptions import ChanliteError, HTTPException
from chanlite.types import Message, Receive, Scope

__all__ = ["DEFAULT_MAX_BODY_SIZE", "ClientDisconnect", "HTTPConnection", "Request", "State"]

#: Default cap for bodies that ``body()``, ``json()`` and ``form()`` buffer.
DEFAULT_MAX_BODY_SIZE = 1024 * 1024


class ClientDisconnect(ChanliteError):
    """The client went away while the request body was still being read."""


class State:
    """A bag of attributes for one connection (``request.state.user = ...``)."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"'State' object has no attribute {name!r}")

    # Declared so type checkers accept any attribute name being set.
    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value

    def __repr__(self) -> str:
        return f"State({self.__dict__!r})"


async def _empty_receive() -> Message:
    raise RuntimeError("This Request was built without a receive channel; it has no body.")


class HTTPConnection:
    """What an HTTP request and a WebSocket have in common, read from the ASGI *scope*.

    Everything derived (headers, query, cookies) is parsed on first use and cached.
    """

    __slots__ = ("_cookies", "_headers", "_query_params", "_state", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self._headers: Headers | None = None
        self._query_params: QueryParams | None = None
        self._cookies: dict[str, str] | None = None
        self._state: State | None = None

    @property
    def path(self) -> str:
        """The decoded request path, e.g. ``/items/3``."""
        path: str = self.scope["path"]
        return path

    @property
    def path_params(self) -> dict[str, Any]:
        """Values captured by the route pattern (``{id:int}`` -> ``{"id": 3}``)."""
        params: dict[str, Any] = self.scope.get("path_params", {})
        return params

    @property
    def headers(self) -> Headers:
        """The request headers (case-insensitive)."""
        if self._headers is None:
            self._headers = Headers(self.scope.get("headers", []))
        return self._headers

    @property
    def query_params(self) -> QueryParams:
        """Parameters from the query string."""
        if self._query_params is None:
            self._query_params = QueryParams(self.scope.get("query_string", b""))
        return self._query_params

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies from the ``Cookie`` header(s); malformed pairs are skipped."""
        if self._cookies is None:
            cookies: dict[str, str] = {}
            for value in self.headers.getlist("cookie"):
                cookies.update(parse_cookies(value))
            self._cookies = cookies
        return self._cookies

    @property
    def client(self) -> Address | None:
        """The peer's ``(host, port)``, or ``None`` when the server does not say."""
        client = self.scope.get("client")
        if not client:
            return None
        return Address(str(client[0]), int(client[1]))

    @property
    def url(self) -> str:
        """The full request URL, rebuilt from the scope and the ``Host`` header."""
        scheme = self.scope.get("scheme", "http")
        host = self.headers.get("host")
        if host is None:
            server = self.scope.get("server")
            if server:
                host_name, port = server[0], server[1]
                default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(scheme)
                host = host_name if port is None or port == default else f"{host_name}:{port}"
            else:
                host = "localhost"
        raw_path = self.scope.get("raw_path")
        if raw_path:
            path = raw_path.decode("latin-1")
        else:
            path = quote(self.scope.get("root_path", "") + self.path)
        url = f"{scheme}://{host}{path}"
        query: bytes = self.scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        return url

    @property
    def state(self) -> State:
        """Per-connection attribute bag, created on first use."""
        if self._state is None:
            self._state = State()
        return self._state

    @property
    def app(self) -> Any:
        """The application serving this connection, if the server put it in the scope."""
        return self.scope.get("app")


class Request(HTTPConnection):
    """An HTTP request: scope plus the ``receive`` channel its body arrives on.

    ``body()``, ``json()`` and ``form()`` buffer the body and refuse more than
    ``max_body_size`` bytes with a 413 (``None`` lifts the cap; set the attribute before
    reading to change it for one request, e.g. for a large upload). ``stream()`` yields chunks
    as they arrive with no cap; a body can be streamed once, unless ``body()`` read it first.
    """

    __slots__ = (
        "_body",
        "_disconnected",
        "_form",
        "_pending",
        "_receive",
        "_stream_consumed",
        "max_body_size",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive = _empty_receive,
        *,
        max_body_size: int | None = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        super().__init__(scope)
        self._receive = receive
        self._body: bytes | None = None
        self._form: FormData | None = None
        self._stream_consumed = False
        self._disconnected = False
        # A body message picked up by is_disconnected(), handed to the next stream() read.
        self._pending: Message | None = None
        self.max_body_size = max_body_size

    @property
    def method(self) -> str:
        """The HTTP method, upper case."""
        method: str = self.scope["method"]
        return method

    @property
    def receive(self) -> Receive:
        """The ASGI receive callable this request reads from."""
        return self._receive

    async def _next_message(self) -> Message:
        if self._pending is not None:
            message, self._pending = self._pending, None
            return message
        return await self._receive()

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """Yield the body in chunks as they arrive (no size cap).

        Raises ``ClientDisconnect`` if the client leaves mid-body and ``RuntimeError`` if
        the body was already streamed.
        """
        if self._body is not None:
            if self._body:
                yield self._body
            return
        if self._stream_consumed:
            raise RuntimeError(
                "The request body was already consumed by stream(); it can be read only once."
                " Call 'await request.body()' first if you need it more than once."
            )
        self._stream_consumed = True
        while True:
            message = await self._next_message()
            if message["type"] == "http.request":
                chunk: bytes = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return
            elif message["type"] == "http.disconnect":
                self._disconnected = True
                raise ClientDisconnect("The client disconnected before sending the whole body.")

    async def body(self) -> bytes:
        """The whole body (cached), at most ``max_body_size`` bytes, else HTTP 413."""
        if self._body is None:
            limit = self.max_body_size
            self._check_content_length(limit)
            chunks: list[bytes] = []
            size = 0
            async with aclosing(self.stream()) as stream:
                async for chunk in stream:
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise HTTPException(413, f"Request body exceeds {limit} bytes.")
                    chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    def _check_content_length(self, limit: int | None) -> None:
        if limit is None:
            return
        declared = self.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise HTTPException(413, f"Request body exceeds {limit} bytes.")

    async def json(self) -> Any:
        """The body decoded as JSON; invalid or empty JSON is an HTTP 400."""
        body = await self.body()
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPException(400, f"Invalid JSON body: {exc}") from None

    async def form(
        self,
        *,
        max_fields: int = 1000,
        max_files: int = 1000,
        max_part_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> FormData:
        """The body parsed as a form (cached): urlencoded or ``multipart/form-data``.

        Limits: more than *max_fields* fields or *max_files* files is a 400; a non-file field
        larger than *max_part_size*, or a body over ``max_body_size``, is a 413. A body that
        is not a form at all gives an empty ``FormData``.
        """
        if self._form is not None:
            return self._form
        content_type, options = parse_options_header(self.headers.get("content-type"))
        if content_type == b"multipart/form-data":
            boundary = options.get(b"boundary")
            if not boundary:
                raise HTTPException(400, "Multipart form without a boundary parameter.")
            parser = _MultipartReader(boundary, max_fields, max_files, max_part_size)
            self._form = await parser.parse(self)
        elif content_type == b"application/x-www-form-urlencoded":
            body = await self.body()
            try:
                pairs = parse_qsl(
                    body.decode("utf-8", "replace"),
                    keep_blank_values=True,
                    max_num_fields=max_fields,
                    errors="replace",
                )
            except ValueError:
                raise HTTPException(
                    400, f"Too many form fields; the limit is {max_fields}."
                ) from None
            for name, value in pairs:
                if len(value) > max_part_size:
                    raise HTTPException(
                        413, f"Form field {name!r} exceeds {max_part_size} bytes."
                    ) from None
            self._form = FormData(pairs)
        else:
            self._form = FormData()
        return self._form

    @property
    def has_form(self) -> bool:
        """True once :meth:`form` has parsed the body (its files need :meth:`close`)."""
        return self._form is not None

    async def close(self) -> None:
        """Release uploaded files of a parsed form."""
        if self._form is not None:
            await self._form.close()

    async def is_disconnected(self) -> bool:
        """Whether the client has gone away (checks without waiting for it)."""
        if self._disconnected:
            return True
        if self._pending is not None:
            return False
        task = asyncio.ensure_future(self._receive())
        # Give an already-queued message a couple of loop turns to arrive.
        for _ in range(2):
            if task.done():
                break
            await asyncio.sleep(0)
        if not task.done():
            task.cancel()
            # wait() never raises; a message that won the race with cancel() is kept.
            await asyncio.wait({task})
            if task.cancelled():
                return False
        message = task.result()
        if message["type"] == "http.disconnect":
            self._disconnected = True
        else:
            self._pending = message
        return self._disconnected


class _MultipartReader:
    """Drives python-multipart's streaming parser from ``Request.stream()``.

    The parser calls back synchronously; completed chunks are queued in ``_events`` and
    flushed with awaits between writes, so file data goes to ``UploadFile`` as it comes.
    """

    def __init__(self, boundary: bytes, max_fields: int, max_files: int, max_part: int) -> None:
        self.boundary = boundary
        self.max_fields = max_fields
        self.max_files = max_files
        self.max_part = max_part
        self.items: list[tuple[str, str | UploadFile]] = []
        self.fields = 0
        self.files = 0
        self.header_field = b""
        self.header_value = b""
        self.part_headers: list[tuple[bytes, bytes]] = []
        self.name = ""
        self.field_data = bytearray()
        self.file: UploadFile | None = None
        self.pending_file_data: list[tuple[UploadFile, bytes]] = []
        self.error: HTTPException | None = None

    def on_part_begin(self) -> None:
        self.part_headers = []
        self.field_data = bytearray()
        self.file = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part_headers.append((self.header_field.lower(), self.header_value))
        self.header_field = b""
        self.header_value = b""

    def on_headers_finished(self) -> None:
        headers = Headers(self.part_headers)
        disposition, options = parse_options_header(headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            self._fail(HTTPException(400, "Multipart part without a form-data name."))
            return
        self.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            self.files += 1
            if self.files > self.max_files:
                self._fail(HTTPException(400, f"Too many files; the limit is {self.max_files}."))
                return
            self.file = UploadFile(
                filename=options[b"filename"].decode("utf-8", "replace"),
                content_type=headers.get("content-type", "application/octet-stream"),
                headers=headers,
            )
        else:
            self.fields += 1
            if self.fields > self.max_fields:
                self._fail(HTTPException(400, f"Too many fields; the limit is {self.max_fields}."))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.file is not None:
            self.pending_file_data.append((self.file, data[start:end]))
            return
        self.field_data += data[start:end]
        if len(self.field_data) > self.max_part:
            self._fail(
                HTTPException(413, f"Form field {self.name!r} exceeds {self.max_part} bytes.")
            )

    def on_part_end(self) -> None:
        if self.file is not None:
            self.items.append((self.name, self.file))
        else:
            self.items.append((self.name, self.field_data.decode("utf-8", "replace")))

    def _fail(self, error: HTTPException) -> None:
        # Keep the first error; the caller raises it after the current write() returns.
        if self.error is None:
            self.error = error

    async def parse(self, request: Request) -> FormData:
        try:
            parser = self._parser()
        except FormParserError as exc:
            raise HTTPException(400, f"Malformed multipart body: {exc}") from None
        return await self._parse(request, parser)

    def _parser(self) -> MultipartParser:
        return MultipartParser(
            self.boundary,
            {
                "on_part_begin": self.on_part_begin,
                "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end,
                "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value,
                "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished,
            },
        )

    async def _parse(self, request: Request, parser: MultipartParser) -> FormData:
        limit = request.max_body_size
        request._check_content_length(limit)
        size = 0
        try:
            async with aclosing(request.stream()) as stream:
                async for chunk in stream:
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise HTTPException(413, f"Request body exceeds {limit} bytes.")
                    try:
                        parser.write(chunk)
                    except FormParserError as exc:
                        raise HTTPException(400, f"Malformed multipart body: {exc}") from None
                    if self.error is not None:
                        raise self.error
                    await self._flush_files()
            parser.finalize()
            await self._flush_files()
        except BaseException:
            await FormData(self.items).close()
            if self.file is not None:
                await self.file.close()
            raise
        for _, value in self.items:
            if isinstance(value, UploadFile):
                await value.seek(0)
        return FormData(self.items)

    async def _flush_files(self) -> None:
        # Parts start and end inside write(), so file data is queued with its file and
        # written here, between writes, where awaiting is possible.
        data, self.pending_file_data = self.pending_file_data, []
        for target, piece in data:
            await target.write(piece)
