"""The asyncio glue for HTTP/1.1: transports in, :mod:`chanlite.server.http` events out.

This module and :mod:`chanlite.server.ws_connection` are the only server code that does
I/O. Each connection is an :class:`asyncio.Protocol`; requests on it run one at a time
(pipelined ones queue up with reading paused); the app's ``receive``/``send`` are methods
of a :class:`RequestCycle`. Timeouts are deadlines checked by the server's one shared
tick, not timers per connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, cast

from chanlite.server.http import (
    BadRequest,
    Body,
    MessageEnd,
    RequestHead,
    RequestParser,
    ResponseError,
    ResponseFramer,
    Upgrade,
    simple_response,
)
from chanlite.server.logs import log_access
from chanlite.server.state import (
    ServerState,
    access_logger,
    base_scope,
    client_address,
    logger,
    server_address,
)
from chanlite.server.ws_connection import WebSocketConnection
from chanlite.types import ASGIApp, Message, Receive, Scope, Send

HEADER, IDLE, BODY, WRITE, LINGER = 1, 2, 3, 4, 5  # deadline kinds


async def service_unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    """What a request gets over ``--limit-concurrency``."""
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": b"Service Unavailable"})


class HTTPConnection(asyncio.Protocol):
    """One TCP (or Unix) connection speaking HTTP/1.1 until it upgrades or closes."""

    __slots__ = (
        "client",
        "cycles",
        "deadline",
        "deadline_kind",
        "drain",
        "heavy",
        "lingering",
        "loop",
        "parser",
        "pending_error",
        "read_paused",
        "secure",
        "server",
        "shutting_down",
        "state",
        "transport",
        "write_paused",
    )

    def __init__(
        self,
        state: ServerState,
        loop: asyncio.AbstractEventLoop,
        server: tuple[str, int | None] | None = None,
    ) -> None:
        config = state.config
        self.state = state
        self.loop = loop
        self.parser = RequestParser(
            config.limit_request_line,
            config.limit_request_fields,
            config.limit_request_header_size,
        )
        self.cycles: deque[RequestCycle] = deque()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        # The listener's address when it is the same for all its connections (not a
        # wildcard bind); else looked up per connection.
        self.server = server
        self.secure = False
        self.read_paused = False
        self.write_paused = False
        self.drain: asyncio.Future[None] | None = None
        self.deadline = 0.0
        self.deadline_kind = HEADER
        self.pending_error: BadRequest | None = None
        self.shutting_down = False
        self.lingering = False  # closed by us with bytes still unsent (state.lingering)
        self.heavy = False  # its buffers grew past high_water once (see ServerState)

    # asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only look like them.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        high = self.state.config.high_water
        transport.set_write_buffer_limits(high=high, low=high // 4)
        self.client = client_address(transport)
        if self.server is None:
            self.server = server_address(transport)
        self.secure = transport.get_extra_info("sslcontext") is not None
        self.deadline = self.loop.time() + self.state.config.timeout_request_header
        self.deadline_kind = HEADER
        self.state.connections.add(self)
        self.state.counters.http_open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self.state.counters.http_open -= 1
        if self.heavy:
            self.state.request_trim(self.loop.time())
        if self.lingering:
            self.lingering = False
            self.state.lingering -= 1
        for cycle in self.cycles:
            cycle.disconnected = True
            cycle.wake()
        self._release_drain()
        if exc is not None and logger.isEnabledFor(logging.DEBUG):
            logger.debug("HTTP connection lost: %s", exc)

    def eof_received(self) -> bool | None:
        return None  # close the transport; an in-flight request learns via connection_lost

    def pause_writing(self) -> None:
        self.write_paused = True
        self.heavy = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._release_drain()

    def data_received(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            if event.__class__ is Body:
                if not self.cycles:
                    continue  # the request's app is done (its connection is closing)
                cycle = self.cycles[-1]
                cycle.body.extend(event.data)
                if len(cycle.body) > self.state.config.high_water:
                    self.heavy = True
                    self.pause_reading()
                cycle.wake()
            elif event.__class__ is RequestHead:
                self._on_head(event)
            elif event.__class__ is MessageEnd:
                if self.cycles:
                    cycle = self.cycles[-1]
                    cycle.more_body = False
                    cycle.wake()
            elif event.__class__ is Upgrade:
                self._on_upgrade(event)
                return
            elif event.__class__ is BadRequest:
                self._on_bad_request(event)
                return
        if self.deadline_kind == IDLE and self.parser.mid_request and not self.cycles:
            # The idle wait is over; the header deadline runs from the first byte.
            self.deadline = self.loop.time() + self.state.config.timeout_request_header
            self.deadline_kind = HEADER

    # events ---------------------------------------------------------------------------

    def _on_head(self, head: RequestHead) -> None:
        self.deadline = 0.0
        state = self.state
        scope = base_scope(state, "http", head, self.client, self.server, self.secure)
        scope["method"] = head.method
        state.counters.http_requests += 1
        app = service_unavailable if state.over_limit() else state.app
        framer = ResponseFramer(head.method == "HEAD", head.keep_alive and not self.shutting_down)
        cycle = RequestCycle(self, scope, app, framer, head.expect_continue)
        self.cycles.append(cycle)
        if len(self.cycles) == 1:
            cycle.start()
        else:
            self.pause_reading()  # pipelined: parse no further until the queue drains

    def _on_upgrade(self, upgrade: Upgrade) -> None:
        if self.cycles:
            # An upgrade pipelined behind other requests: refuse it once they are done.
            self.pending_error = BadRequest(400, "WebSocket upgrade after pipelined requests")
            return
        self.state.connections.discard(self)
        self.state.counters.http_open -= 1  # the socket is a WebSocket's from here on
        ws = WebSocketConnection(self.state, self.loop, self.transport)
        self.transport.set_protocol(ws)
        self.transport = None  # type: ignore[assignment]
        ws.start(upgrade.head, upgrade.trailing, self.client, self.server, self.secure)

    def _on_bad_request(self, bad: BadRequest) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("Bad request from %s: %s", self.client, bad.reason)
        if self.cycles and self.cycles[-1].more_body:
            # The broken request is one an app is already reading: it cannot complete.
            first = self.cycles[0]
            if len(self.cycles) == 1 and not first.head_written:
                self._send_error(bad)
            else:
                self.close()
            for cycle in self.cycles:
                cycle.disconnected = True
                cycle.wake()
            return
        if self.cycles:
            self.pending_error = bad  # answer after the responses already owed
            self.pause_reading()
            return
        self._send_error(bad)

    def _send_error(self, bad: BadRequest) -> None:
        if not self.transport.is_closing():
            self.transport.write(
                simple_response(bad.status, bad.reason, self.state.default_headers)
            )
            self.close()

    def close(self) -> None:
        """Close the connection; what is still unsent gets ``timeout_response_write``
        seconds to reach the client before the transport is aborted (a client that never
        reads must not keep the socket, and its descriptor, open for ever)."""
        transport = self.transport
        if transport is None:
            return
        if not transport.is_closing():
            transport.close()
        grace = self.state.config.timeout_response_write
        if transport.get_write_buffer_size() and not self.lingering:
            self.lingering = True
            self.state.lingering += 1
            if grace is None:
                return
            self.deadline = self.loop.time() + grace
            self.deadline_kind = LINGER

    def cycle_done(self, cycle: RequestCycle) -> None:
        """Called when a request's app returns: start the next one or close."""
        self.cycles.popleft()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if (
            not cycle.framer.keep_alive
            or not cycle.framer.complete
            or cycle.more_body  # the app answered without reading the whole body
            or self.shutting_down
        ):
            self.close()
            return
        if self.cycles:
            self.cycles[0].start()
            if len(self.cycles) == 1:
                self.resume_reading()
            return
        if self.pending_error is not None:
            self._send_error(self.pending_error)
            return
        self.resume_reading()
        self.deadline = self.loop.time() + self.state.config.timeout_keep_alive
        self.deadline_kind = IDLE

    # flow control and timeouts --------------------------------------------------------

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    async def wait_writable(self) -> None:
        """Wait while the transport's buffer is above the high-water mark (at most
        ``timeout_response_write`` seconds: then the client is dropped)."""
        if self.drain is None:
            self.drain = self.loop.create_future()
        self._set_deadline(WRITE, self.state.config.timeout_response_write)
        try:
            await self.drain
        finally:
            self._clear_deadline(WRITE)

    async def wait_body(self, waiter: asyncio.Future[None]) -> None:
        """Wait for more of the request body (at most ``timeout_request_body`` seconds
        without a byte: then the client is dropped)."""
        self._set_deadline(BODY, self.state.config.timeout_request_body)
        try:
            await waiter
        finally:
            self._clear_deadline(BODY)

    def _set_deadline(self, kind: int, timeout: float | None) -> None:
        if timeout is not None and not self.lingering:
            self.deadline = self.loop.time() + timeout
            self.deadline_kind = kind

    def _clear_deadline(self, kind: int) -> None:
        if self.deadline_kind == kind and not self.lingering:
            self.deadline = 0.0

    def _release_drain(self) -> None:
        drain, self.drain = self.drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def tick(self, now: float) -> None:
        """The shared timer's visit: enforce the header, keep-alive, body, write and
        linger deadlines."""
        if self.deadline and now >= self.deadline and self.transport is not None:
            kind = self.deadline_kind
            self.deadline = 0.0
            if kind in (HEADER, IDLE):
                if kind == HEADER:
                    logger.debug("Request header timeout from %s", self.client)
                self.close()
                return
            reason = _TIMEOUTS[kind]
            logger.debug("%s from %s; dropping the connection", reason, self.client)
            self.transport.abort()

    def shutdown(self) -> None:
        """Graceful shutdown: close when idle, else after the current response."""
        self.shutting_down = True
        if self.transport is None:
            return
        if not self.cycles:
            self.close()
        else:
            for cycle in self.cycles:
                cycle.framer.keep_alive = False


_TIMEOUTS = {
    BODY: "Request body timeout",
    WRITE: "Response write timeout (the client does not read)",
    LINGER: "Unsent response after close (the client does not read)",
}


class RequestCycle:
    """One request/response exchange: the ASGI ``receive`` and ``send`` for it."""

    __slots__ = (
        "app",
        "body",
        "body_done",
        "conn",
        "disconnected",
        "expect_continue",
        "framer",
        "head_written",
        "more_body",
        "response_headers",
        "response_started",
        "scope",
        "started_at",
        "waiter",
    )

    def __init__(
        self,
        conn: HTTPConnection,
        scope: Scope,
        app: ASGIApp,
        framer: ResponseFramer,
        expect_continue: bool,
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.app = app
        self.framer = framer
        self.expect_continue = expect_continue
        self.body = bytearray()
        self.more_body = True
        self.body_done = False
        self.disconnected = False
        self.response_started = False
        self.head_written = False
        self.response_headers: Any = ()
        self.waiter: asyncio.Future[None] | None = None
        self.started_at = conn.loop.time()

    def start(self) -> None:
        state = self.conn.state
        state.active += 1
        task = self.conn.loop.create_task(self.run())
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)

    def wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                logger.debug("Request cancelled: %s %s", self.scope["method"], self.scope["path"])
            else:
                logger.error("Exception in ASGI application", exc_info=exc)
            self._fail()
            if not isinstance(exc, Exception):
                raise
        else:
            if not self.response_started and not self.disconnected:
                logger.error("ASGI application returned without starting a response")
                self._fail()
            elif not self.framer.complete and not self.disconnected:
                logger.error("ASGI application returned without completing the response")
                self._fail()
        finally:
            self.conn.state.active -= 1
            self.conn.cycle_done(self)
            # Once per request, when it ends: a stream the client left included.
            if self.conn.state.access_log and access_logger.isEnabledFor(logging.INFO):
                log_access(
                    self.scope,
                    self.framer.status,
                    self.conn.loop.time() - self.started_at,
                    self.disconnected and not self.framer.complete,
                )

    def _fail(self) -> None:
        transport = self.conn.transport
        if transport is None or transport.is_closing() or self.disconnected:
            return
        if not self.head_written:
            transport.write(
                simple_response(500, "Internal Server Error", self.conn.state.default_headers)
            )
            self.framer.status = 500
            self.framer.complete = True
        self.framer.keep_alive = False
        self.conn.close()

    async def receive(self) -> Message:
        if self.expect_continue and not self.disconnected:
            self.expect_continue = False
            if self.more_body and not self.body and not self.response_started:
                self.conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not self.body and self.more_body and not self.disconnected:
            self.conn.resume_reading()
            self.waiter = self.conn.loop.create_future()
            await self.conn.wait_body(self.waiter)
        if self.disconnected or self.framer.complete:
            return {"type": "http.disconnect"}
        if self.body_done:
            # The whole body was read already: wait for the response or a disconnect.
            while not self.disconnected and not self.framer.complete:
                self.waiter = self.conn.loop.create_future()
                await self.waiter
            return {"type": "http.disconnect"}
        body = bytes(self.body)
        self.body.clear()
        if self.conn.read_paused and len(self.conn.cycles) == 1:
            self.conn.resume_reading()
        if not self.more_body:
            self.body_done = True
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not self.response_started:
                raise RuntimeError("http.response.body sent before http.response.start")
            if self.framer.complete:
                raise RuntimeError("http.response.body sent after the response completed")
            if self.disconnected:
                return
            conn = self.conn
            if conn.write_paused:
                await conn.wait_writable()
                if self.disconnected:
                    return
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            try:
                if not self.head_written:
                    self.head_written = True
                    if self.more_body:
                        # Unread request body: the connection closes after this response
                        # rather than read and discard the rest.
                        self.framer.keep_alive = False
                    status, headers = self.response_headers
                    head = self.framer.head(
                        status,
                        headers,
                        conn.state.default_headers,
                        None if more_body else len(body),
                        self.scope["http_version"] == "1.1",
                    )
                    conn.transport.write(head + self.framer.body(body, more_body))
                else:
                    data = self.framer.body(body, more_body)
                    if data:
                        conn.transport.write(data)
            except ResponseError:
                self.framer.keep_alive = False
                raise
            if not more_body:
                self._complete()
        elif kind == "http.response.start":
            if self.response_started:
                raise RuntimeError("http.response.start sent twice")
            self.response_started = True
            self.response_headers = (int(message["status"]), message.get("headers", ()))
            # The head waits for the first body message (one write, and Content-Length for
            # single-message bodies), unless the app yields to the loop first: streaming
            # responses (SSE) must not hold their headers back until the first event.
            self.conn.loop.call_soon(self._flush_head)
        elif kind == "http.response.trailers":
            pass  # trailers are not offered (no "http.response.trailers" in the scope)
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} for an HTTP request")

    def _flush_head(self) -> None:
        if self.head_written or self.disconnected:
            return
        transport = self.conn.transport
        if transport is None or transport.is_closing():
            return
        self.head_written = True
        if self.more_body:
            self.framer.keep_alive = False
        status, headers = self.response_headers
        try:
            head = self.framer.head(
                status,
                headers,
                self.conn.state.default_headers,
                None,
                self.scope["http_version"] == "1.1",
            )
        except ResponseError as exc:
            logger.error("Invalid response from the ASGI application: %s", exc)
            self.framer.keep_alive = False
            self.conn.close()
            return
        transport.write(head)

    def _complete(self) -> None:
        self.wake()
