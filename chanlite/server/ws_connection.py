"""The asyncio glue for WebSockets: a transport wired to a :class:`WebSocketProtocol`.

Takes over the transport from :class:`~chanlite.server.connection.HTTPConnection` when a
request asks to upgrade. Incoming messages queue for the app's ``receive`` (reading pauses
when the app falls behind); ``send`` waits while the transport buffer is above the
high-water mark. Keep-alive pings, the handshake and close timeouts are driven by the
server's one shared tick. ``scope["extensions"]["chanlite.frames"]["send_frame"]`` writes a
pre-encoded frame straight to the transport: the broadcast fast path (its caller counts
the frames; the server's message counters do not). The app may add
``"on_slow_consumer"`` to that dict: ``(bytes_waiting, why) -> str`` is called once when the
slow-consumer policy closes the connection, and what it returns (e.g. ``"; channel ...,
groups ..."``) ends the log line.
"""

from __future__ import annotations

import asyncio
import logging

from websockets.protocol import State

from chanlite.closecodes import SLOW_CONSUMER, CloseCode
from chanlite.server.http import RequestHead, ResponseError, simple_response
from chanlite.server.state import (
    ClientDisconnected,
    ServerState,
    access_logger,
    base_scope,
    logger,
)
from chanlite.server.websocket import WebSocketProtocol
from chanlite.types import Message, Scope

OPEN = State.OPEN
MAX_QUEUED = 16  # messages waiting for the app before reading pauses
NO_OPTIONS: dict[str, object] = {}  # an extension without settings: one dict for all


class WebSocketConnection(asyncio.Protocol):
    """One WebSocket, from the upgrade request to the closed transport."""

    __slots__ = (
        "accepted",
        "closed",
        "congested_since",
        "control_window",
        "counted",
        "counters",
        "deadline",
        "drain",
        "heavy",
        "is_open",
        "lingering",
        "loop",
        "lost",
        "next_ping",
        "pending",
        "pending_size",
        "queue",
        "read_paused",
        "scope",
        "slow",
        "state",
        "transport",
        "waiter",
        "write_paused",
        "ws",
    )

    def __init__(
        self,
        state: ServerState,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
    ) -> None:
        config = state.config
        self.state = state
        # The server's counters, one attribute read away: the echo path counts 4 times.
        self.counters = state.counters
        self.loop = loop
        self.transport = transport
        self.ws = WebSocketProtocol(
            config.ws_max_size,
            config.ws_per_message_deflate,
            config.ws_max_fragments,
            config.ws_max_control_frames,
        )
        self.scope: Scope = {}
        # A list, not a deque: a deque's first block costs ~600 bytes per idle socket.
        self.queue: list[Message] = []
        self.waiter: asyncio.Future[None] | None = None
        self.drain: asyncio.Future[None] | None = None
        self.accepted = False
        self.is_open = False
        self.closed = False
        self.counted = False  # counted in state.active (the app is running)
        self.lingering = False  # counted in state.lingering (the app is done, the socket not)
        self.lost = False  # connection_lost came: the descriptor is released
        self.read_paused = False
        self.write_paused = transport.is_closing()
        self.deadline = 0.0
        self.next_ping = 0.0
        self.congested_since = 0.0  # when the write buffer went above high_water (0: not)
        self.control_window = 0.0  # when the control-frame budget was last reset
        self.slow = False  # closed by the slow-consumer policy
        # Its buffers grew past high_water once (writes backed up, or reading paused for
        # the app): when it is gone the server gives the freed memory back to the OS.
        self.heavy = False
        # Frames from send_frame not yet written (None: nothing queued, not on the dirty list).
        self.pending: list[bytes] | None = None
        self.pending_size = 0

    def start(
        self,
        head: RequestHead,
        trailing: bytes,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        secure: bool,
    ) -> None:
        """Begin the handshake for the upgrade request *head*."""
        state = self.state
        state.connections.add(self)
        state.counters.ws_open += 1
        scope = base_scope(state, "websocket", head, client, server, secure)
        subprotocols: list[str] = []
        for name, value in head.headers:
            if name == b"sec-websocket-protocol":
                subprotocols.extend(
                    p.strip() for p in value.decode("latin-1").split(",") if p.strip()
                )
        scope["subprotocols"] = subprotocols
        scope["extensions"] = {
            "websocket.http.response": NO_OPTIONS,
            "chanlite.frames": {"send_frame": self.send_frame, "send_now": self.send_now},
        }
        self.scope = scope
        self.ws.receive_handshake(head.method, head.target, head.http_version, head.headers)
        if state.over_limit():
            logger.debug(
                "WebSocket handshake from %s refused: 503 over limit_concurrency (%d)",
                _peer(scope),
                state.config.limit_concurrency,
            )
            state.counters.ws_refused["over_limit"] += 1
            self.transport.write(simple_response(503, "Service Unavailable", state.default_headers))
            self._close_transport()
            return
        state.active += 1
        self.counted = True
        self.queue.append({"type": "websocket.connect"})
        if trailing:
            self.data_received(trailing)
        self.deadline = self.loop.time() + state.config.ws_handshake_timeout
        task = self.loop.create_task(self.run())
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)

    # asyncio.Protocol -----------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        state = self.state
        state.connections.discard(self)
        state.counters.ws_open -= 1
        self.lost = True
        if self.heavy:
            state.request_trim(self.loop.time())
        if self.lingering:
            self.lingering = False
            state.lingering -= 1
        self.pending = None  # still on the dirty list maybe; flush_pending skips it
        self.closed = True
        self.is_open = False
        self.queue.extend(self.ws.connection_lost())
        self._wake()
        drain, self.drain = self.drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        # The client is not reading what we write: read nothing more from it (a ping
        # flood's pongs, a request/answer loop) and keep only its latest pong.
        self.write_paused = True
        self.heavy = True
        self.congested_since = self.loop.time()
        self.ws.hold_pongs()
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.congested_since = 0.0
        if self.ws.release_pong():
            self._flush()
        self._resume_reading(MAX_QUEUED)
        drain, self.drain = self.drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _resume_reading(self, below: int) -> None:
        """Read again unless something still holds reading: the handshake not answered,
        the app more than *below* messages behind, or the client not reading."""
        if (
            self.read_paused
            and self.accepted
            and not self.write_paused
            and not self.closed
            and len(self.queue) < below
        ):
            self.read_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if not self.accepted and not self.read_paused:
            # Nothing is parsed before the handshake is answered: buffer one read, no more.
            self.read_paused = True
            self.transport.pause_reading()
        ws = self.ws
        counters = self.counters
        counters.ws_bytes_in += len(data)
        messages = ws.receive_data(data)
        if ws.has_output():  # a pong, a close reply, an error close; usually nothing
            if ws.error is not None:
                # A protocol violation (a flood of fragments or control frames, an
                # oversized message) may have taken memory: give it back once it is gone.
                self.heavy = True
                if logger.isEnabledFor(logging.DEBUG):
                    self._log_error()
            self._flush()
        if messages:
            counters.ws_messages_in += len(messages)
            self.queue.extend(messages)
            self._wake()
            if len(self.queue) >= MAX_QUEUED and not self.read_paused:
                self.heavy = True
                self.read_paused = True
                self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self.queue.extend(self.ws.receive_eof())
        self._wake()
        self._flush()
        return None

    # I/O helpers ----------------------------------------------------------------------

    def _flush(self) -> None:
        if self.pending is not None:
            self.flush_pending()  # queued broadcast frames go first: order is kept
        transport = self.transport
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            else:
                # The protocol says: half-close. A server closes the TCP connection.
                self._close_transport()
                return
        state = self.ws.state
        # Cached for send_frame, the broadcast hot path: one attribute read per member.
        self.is_open = state is OPEN and self.accepted and not self.closed
        if state is State.CLOSING and not self.deadline:
            # Our close frame is out (or theirs echoed): the peer has this long to finish.
            self.deadline = self.loop.time() + self.state.config.ws_close_timeout

    def _close_transport(self) -> None:
        self.closed = True
        self.is_open = False
        transport = self.transport
        if not transport.is_closing():
            transport.close()
            if transport.get_write_buffer_size():
                # A client that does not read would keep the socket open for ever: it gets
                # the close timeout to take the rest, then the transport is aborted.
                self.deadline = self.loop.time() + self.state.config.ws_close_timeout

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def send_frame(self, frame: bytes) -> bool:
        """Queue an encoded, unmasked, complete frame; False (nothing queued) only when
        the socket is not open (not accepted yet, closing, closed).

        Queued frames go out at the end of this loop iteration, every frame queued for
        this connection in one ``transport.write`` (one ``send()`` for N broadcasts), or
        earlier, before anything else is written to the connection, so order is kept.
        A client that lets more than ``ws_send_limit`` bytes pile up is closed by the
        slow-consumer policy (and this frame is refused).
        """
        if not self.is_open:
            return False
        pending = self.pending
        size = self.pending_size + len(frame)
        if size + self.transport.get_write_buffer_size() > self.state.send_limit:
            self.slow_consumer(f"more than {self.state.send_limit} bytes queued")
            return False
        self.pending_size = size
        # Not counted in the server's counters: the caller counts what it queues here, once
        # for all the members of a broadcast (this is the per-member hot path).
        if pending is None:
            self.pending = [frame]
            state = self.state
            state.dirty.append(self)
            if not state.flush_scheduled:
                state.flush_scheduled = True
                self.loop.call_soon(state.flush_dirty)
        else:
            pending.append(frame)
        return True

    def send_now(self, data: str | bytes, text: bool) -> bool:
        """Write one message at once when nothing stands in the way (accepted, open, the
        client keeping up); False sends nothing and leaves it to the ASGI ``send``, which
        waits for the client or raises. The app's fast path past the message dicts."""
        if isinstance(data, str) is not text:
            kind = "a str" if text else "bytes"
            raise TypeError(f"send_now(text={text}) needs {kind}, not {type(data).__name__}")
        if not self.is_open or self.write_paused:
            return False
        if self.pending is not None:
            self.flush_pending()  # queued broadcast frames go first
        counters = self.counters
        counters.ws_messages_out += 1
        counters.ws_bytes_out += len(data)
        ws = self.ws
        frame = ws.small_frame(data)
        if frame is not None:
            self.transport.write(frame)
            return True
        if text:
            ws.send_text(data)  # type: ignore[arg-type]
        else:
            ws.send_bytes(data)  # type: ignore[arg-type]
        # A data frame changes no protocol state: write it, skip _flush's state checks.
        for chunk in ws.data_to_send():
            self.transport.write(chunk)
        return True

    def flush_pending(self) -> None:
        """Write the frames :meth:`send_frame` queued (the server's flush, or before any
        other write to this connection)."""
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        self.pending_size = 0
        if not self.closed:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def slow_consumer(self, why: str) -> None:
        """The slow-consumer policy: drop what is queued, close with 1013 "slow
        consumer", count it, log it once (WARNING, with the peer address); the close
        timeout then aborts the transport if the client does not take the close."""
        if self.slow or self.closed or not self.ws.is_open:
            return
        self.slow = True
        state = self.state
        state.slow_consumers += 1
        waiting = self.pending_size + self.transport.get_write_buffer_size()
        counters = state.counters
        counters.slow_consumers += 1
        counters.slow_consumer_bytes += waiting
        detail = ""
        # The app may have said how to describe this connection (its channel, its groups)
        # and wants to hear of the decision: the log line then names them too.
        report = self.scope["extensions"]["chanlite.frames"].get("on_slow_consumer")
        if report is not None:
            try:
                detail = report(waiting, why) or ""
            except Exception:
                logger.exception("Reporting a slow consumer to the application failed")
        logger.warning(
            "WebSocket client %s is a slow consumer (%s; %d bytes waiting%s): closing with 1013",
            _peer(self.scope),
            why,
            waiting,
            detail,
        )
        self.pending = None  # still on the dirty list maybe; flush_pending skips it
        self.pending_size = 0
        self.ws.close(CloseCode.TRY_AGAIN_LATER, SLOW_CONSUMER)
        self._flush()

    def _log_error(self) -> None:
        code, reason = self.ws.error or (0, "")
        logger.debug("WebSocket from %s closed %d: %s", _peer(self.scope), code, reason)

    def tick(self, now: float) -> None:
        """The shared timer's visit: handshake/close deadlines, keep-alive pings, the
        control-frame window and the time a client may leave its queue unread."""
        if self.closed:
            if self.deadline and now >= self.deadline:  # closed, bytes still unsent
                self.deadline = 0.0
                self.transport.abort()
            return
        if now - self.control_window >= 1.0:
            self.control_window = now
            self.ws.reset_control_budget()
        if self.congested_since:
            limit = self.state.config.ws_send_timeout
            if limit is not None and now - self.congested_since > limit:
                self.congested_since = 0.0
                self.slow_consumer(f"its queue stayed above high_water for {limit:g} s")
        if self.deadline and now >= self.deadline:
            self.deadline = 0.0
            if not self.accepted and self.ws.denial is None:
                self.state.counters.ws_refused["timeout"] += 1
                logger.debug("WebSocket handshake timeout from %s", self.scope.get("client"))
            self.transport.abort()
            self.closed = True
            self.is_open = False
            return
        config = self.state.config
        ws = self.ws
        if not self.accepted or config.ws_ping_interval is None or ws.state is not OPEN:
            return
        if ws.ping_payload is not None:
            timeout = config.ws_ping_timeout
            if timeout is not None and now - ws.ping_sent_at > timeout:
                logger.debug("WebSocket keepalive ping timeout: %s", _peer(self.scope))
                ws.fail(1011, "keepalive ping timeout")
                self.queue.extend(ws.connection_lost())
                self._wake()
                self._flush()
                self._close_transport()
        elif now >= self.next_ping:
            ws.send_ping(now)
            self.next_ping = now + config.ws_ping_interval
            self._flush()

    def shutdown(self) -> None:
        """Graceful shutdown: close with 1001 "going away"."""
        if self.closed:
            return
        if self.accepted and self.ws.state is OPEN:
            self.ws.close(1001, "server shutting down")
            self._flush()
        elif not self.accepted:
            self._close_transport()

    # ASGI -----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.state.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, ClientDisconnected):
                # The client left while the app was sending: not an application bug.
                logger.debug("WebSocket client disconnected: %s", exc)
            elif not isinstance(exc, asyncio.CancelledError):
                logger.error("Exception in ASGI application", exc_info=exc)
            if not self.closed:
                if not self.accepted and self.ws.denial is None:
                    self.state.counters.ws_refused["error"] += 1
                    self.transport.write(
                        simple_response(500, "Internal Server Error", self.state.default_headers)
                    )
                    self._close_transport()
                elif self.accepted:
                    self.ws.close(1011, "")
                    self._flush()
            if not isinstance(exc, Exception):
                raise
        else:
            if not self.closed:
                if not self.accepted and self.ws.denial is None:
                    self.state.counters.ws_refused["app"] += 1
                    self.ws.reject()  # returning without accept means 403
                    self._flush()
                    self._close_transport()
                elif self.accepted and self.ws.state is OPEN:
                    self.ws.close(1000, "")
                    self._flush()
        finally:
            if self.counted:
                self.counted = False
                state = self.state
                state.active -= 1
                if not self.lost:
                    # The app is done but the socket is not (a close handshake the client
                    # has not answered, bytes unsent): it keeps counting against the limit
                    # until the transport is gone, closed or aborted by the close timeout.
                    self.lingering = True
                    state.lingering += 1

    async def receive(self) -> Message:
        while not self.queue:
            if self.closed and self.ws.disconnected:
                return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
            self.waiter = self.loop.create_future()
            await self.waiter
        message = self.queue.pop(0)
        if self.read_paused:
            self._resume_reading(MAX_QUEUED // 2)
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        ws = self.ws
        if kind == "websocket.send":
            if not self.accepted:
                raise RuntimeError("websocket.send before websocket.accept")
            if not self.is_open:  # kept current by _flush: accepted, OPEN, not closed
                raise ClientDisconnected("the WebSocket is closed")
            if self.write_paused:
                self.drain = self.drain or self.loop.create_future()
                await self.drain
                if self.closed or ws.state is not OPEN:
                    raise ClientDisconnected("the WebSocket is closed")
            text = message.get("text")
            counters = self.counters
            counters.ws_messages_out += 1
            if text is not None:
                counters.ws_bytes_out += len(text)
                ws.send_text(text)
            else:
                data = message.get("bytes") or b""
                counters.ws_bytes_out += len(data)
                ws.send_bytes(data)
            self._flush()
        elif kind == "websocket.accept":
            if self.accepted or ws.denial is not None:
                raise RuntimeError("websocket.accept sent twice or after a response")
            if self.closed:
                raise ClientDisconnected("the client went away during the handshake")
            self.deadline = 0.0
            headers = message.get("headers") or ()
            early = ws.accept(message.get("subprotocol"), headers, self.state.date)
            if early is not None:
                self.accepted = True
                interval = self.state.config.ws_ping_interval
                self.next_ping = self.loop.time() + (interval or 0.0)
                self._flush()
                self.state.counters.ws_accepted += 1
                self._log(101)
                if early:
                    self.queue.extend(early)
                    self._wake()
                self._resume_reading(MAX_QUEUED)
            else:
                self.state.counters.ws_refused["app"] += 1
                logger.debug(
                    "WebSocket handshake from %s refused: %s", _peer(self.scope), ws.refusal
                )
                self._flush()
                self._close_transport()
        elif kind == "websocket.close":
            if self.accepted:
                if ws.state is OPEN:
                    ws.close(int(message.get("code") or 1000), message.get("reason") or "")
                    self._flush()
            elif ws.denial is None and not self.closed:
                ws.reject()
                self.state.counters.ws_refused["app"] += 1
                self._flush()
                self._close_transport()
                self._log(403)
        elif kind == "websocket.http.response.start":
            if self.accepted or ws.denial is not None:
                raise RuntimeError("websocket.http.response.start after accept or twice")
            if self.closed:
                raise ClientDisconnected("the client went away during the handshake")
            self.deadline = 0.0
            self.state.counters.ws_refused["denial"] += 1
            status = int(message["status"])
            self.transport.write(
                ws.start_denial(status, message.get("headers") or (), self.state.date)
            )
            self._log(status)
        elif kind == "websocket.http.response.body":
            if ws.denial is None:
                raise RuntimeError("websocket.http.response.body before its start")
            try:
                data = ws.denial.body(message.get("body", b""), message.get("more_body", False))
            except ResponseError:
                self._close_transport()
                raise
            if not self.closed:
                self.transport.write(data)
                if ws.denial.complete:
                    self._close_transport()
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} for a WebSocket")

    def _log(self, status: int) -> None:
        if self.state.access_log and access_logger.isEnabledFor(logging.INFO):
            client = self.scope.get("client")
            access_logger.info(
                '%s - "WebSocket %s" %d',
                f"{client[0]}:{client[1]}" if client else "-",
                self.scope.get("path"),
                status,
            )


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"
