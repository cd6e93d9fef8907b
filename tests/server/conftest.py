"""Helpers: a real server on a free port, and a raw HTTP client over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httptools
import pytest

from chanlite.server import Config, Server
from chanlite.types import ASGIApp, Receive, Scope, Send


@contextlib.asynccontextmanager
async def running(app: ASGIApp, **options: Any) -> AsyncIterator[Server]:
    """Serve *app* on 127.0.0.1:<free port> for the duration of the block."""
    options.setdefault("port", 0)
    options.setdefault("tick_interval", 0.05)
    options.setdefault("access_log", False)
    server = Server(Config(app=app, **options))
    task = asyncio.create_task(server.serve())
    started = asyncio.create_task(server.started.wait())
    done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        task.result()  # raises the startup error
    try:
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


class Response:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False
        self.version = ""

    @property
    def text(self) -> str:
        return self.body.decode()


class RawClient:
    """A plain TCP connection; responses are parsed with httptools' response parser."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.responses: list[Response] = []
        self._current: Response | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.head_request = False

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._current = Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._current.headers[name.lower()] = value
        self._current.raw_headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self._current is not None
        self._current.status = self._parser.get_status_code()
        self._current.version = self._parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        assert self._current is not None
        self._current.body += body

    def on_message_complete(self) -> None:
        assert self._current is not None
        self._current.complete = True
        self.responses.append(self._current)
        self._current = None

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_response(self, timeout: float = 5.0) -> Response:
        """Return the next complete response (or raise on EOF/timeout)."""
        if self.head_request:
            return await self._read_head(timeout)
        async with asyncio.timeout(timeout):
            while not self.responses:
                data = await self.reader.read(65536)
                if not data:
                    if self._current is not None and "content-length" not in str(
                        self._current.headers
                    ):
                        self._parser.feed_data(b"")
                    raise ConnectionError("closed before a full response")
                self._parser.feed_data(data)
        return self.responses.pop(0)

    async def _read_head(self, timeout: float) -> Response:
        # A response to HEAD has no body whatever its headers say; parse only the head.
        async with asyncio.timeout(timeout):
            raw = await self.reader.readuntil(b"\r\n\r\n")
        parser = httptools.HttpResponseParser(self)
        parser.feed_data(raw)
        response = self._current
        assert response is not None
        response.status = parser.get_status_code()
        self._current = None
        return response

    async def read_raw(self, timeout: float = 5.0) -> bytes:
        async with asyncio.timeout(timeout):
            return await self.reader.read(65536)

    async def wait_closed(self, timeout: float = 5.0) -> bytes:
        """Read until EOF and return everything read."""
        out = b""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionResetError:
                    return out
                if not data:
                    return out
                out += data

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """HTTP: echoes method, path, query and body; WebSocket: echoes messages."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send(
                {
                    "type": "websocket.send",
                    "text": message.get("text"),
                    "bytes": message.get("bytes"),
                }
            )
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    text = f"{scope['method']} {scope['path']} {scope['query_string'].decode()}\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": text.encode() + body})


@pytest.fixture
async def echo_server() -> AsyncIterator[Server]:
    async with running(echo_app) as server:
        yield server


from tests.server.procs import served  # noqa: E402  the fixture, for subprocess tests

__all__ = ["served"]
