"""RFC 6455 as a protocol: bytes in, ASGI ``websocket.*`` messages out, and back.

A thin layer over ``websockets.server.ServerProtocol`` (the Sans-I/O core of the
``websockets`` library), which does the handshake checks, framing, masking, control
frames, close handshake, size limits and permessage-deflate. This module adds what ASGI
needs on top: reassembly of fragmented messages with incremental UTF-8 validation (so a
bad byte fails the connection with 1007 as soon as it arrives), the ``websocket.*``
message shapes, denial responses, and keep-alive ping bookkeeping. No I/O: the caller
feeds bytes in and writes whatever :meth:`WebSocketProtocol.data_to_send` returns.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import operator
import os
import re
from collections.abc import Iterable
from typing import Any

from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import State

from chanlite.server.http import Headers, ResponseFramer, default_headers
from chanlite.server.ws_core import server_core
from chanlite.types import Message

_utf8_decoder = codecs.getincrementaldecoder("utf-8")
OPEN = State.OPEN


_RawRequest = tuple[str, bytes, str, Headers]  # method, target, HTTP version, headers
_NEGOTIATED = ("sec-websocket-protocol", "sec-websocket-extensions")
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
_101 = b"HTTP/1.1 101 Switching Protocols\r\n"
_101_UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "


def _extra_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The app's own response headers, as header lines (negotiated ones are ours)."""
    lines = b""
    for name, value in headers:
        if name.lower().decode("latin-1") not in _NEGOTIATED:
            if _BAD.search(name) or _BAD.search(value):
                raise ValueError(f"invalid header in websocket.accept: {name!r}")
            lines += name + b": " + value + b"\r\n"
    return lines


_BAD = re.compile(rb"[\x00\r\n]")
# Headers of unfragmented, unmasked text / binary frames with a 0-125 byte payload.
_SMALL_TEXT = [bytes((0x81, n)) for n in range(126)]
_SMALL_BINARY = [bytes((0x82, n)) for n in range(126)]


class WebSocketProtocol:
    """One server-side WebSocket: handshake, messages, close, keep-alive pings."""

    __slots__ = (
        "_decoder",
        "_parts",
        "_text",
        "denial",
        "disconnected",
        "error",
        "failed",
        "ping_payload",
        "ping_sent_at",
        "proto",
        "refusal",
        "request",
    )

    def __init__(
        self,
        max_size: int | None = 2**20,
        per_message_deflate: bool = True,
        max_fragments: int | None = None,
        max_control_frames: int | None = None,
    ) -> None:
        self.proto = server_core(max_size, per_message_deflate, max_fragments, max_control_frames)
        self.request: _RawRequest | None = None
        self._parts: list[bytes] = []
        self._decoder: Any = None
        self._text = False
        self.disconnected = False
        self.failed = False
        self.denial: ResponseFramer | None = None
        self.ping_payload: bytes | None = None
        self.ping_sent_at = 0.0
        #: The close code and reason when the client broke the protocol (1002, 1007,
        #: 1009...); set once, with the close frame in :meth:`data_to_send`.
        self.error: tuple[int, str] | None = None
        #: Why the handshake was refused, when :meth:`accept` returned None.
        self.refusal = ""

    #: The protocol state (websockets' ``State``); a C getter, read on every flush.
    state = property(operator.attrgetter("proto.state"))

    @property
    def is_open(self) -> bool:
        return self.proto.state is OPEN

    # handshake ------------------------------------------------------------------------

    def receive_handshake(
        self, method: str, target: bytes, http_version: str, headers: Headers
    ) -> None:
        """Take the upgrade request (already parsed by the HTTP layer)."""
        self.request = (method, target, http_version, headers)

    def accept(
        self,
        subprotocol: str | None,
        headers: Iterable[tuple[bytes, bytes]],
        date: bytes | None = None,
    ) -> list[Message] | None:
        """Answer the handshake. Returns the messages that arrived before the answer, or
        None when the request was not a valid WebSocket one (a 4xx response was produced
        instead; the caller writes it and closes). *date* is the server's cached ``Date``
        header value."""
        request, self.request = self.request, None
        assert request is not None
        proto = self.proto
        head = None if subprotocol is not None else self._plain_accept(request, date)
        if head is not None:
            # The common handshake (no extension, no subprotocol) from a template; what
            # websockets' ServerProtocol.accept + send_response would do, without building
            # a Request, Headers and a Response and formatting the date per connection.
            proto.open_with(head + _extra_headers(headers) + b"\r\n")
        else:
            if subprotocol is not None:
                proto.chosen_subprotocol = subprotocol
            method, target, version, raw_headers = request
            response = proto.accept_request(
                method,
                target.decode("ascii", "surrogateescape"),
                version,
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw_headers],
            )
            if response.status_code != 101:
                exc = proto.handshake_exc
                self.refusal = f"{response.status_code} {exc or response.reason_phrase}"
                proto.send_response(response)
                return None
            for name, value in headers:
                key = name.decode("latin-1")
                if key.lower() not in _NEGOTIATED:
                    response.headers[key] = value.decode("latin-1")
            proto.send_response(response)
        # Swap the waiting generator for websockets' frame parser itself: one generator
        # frame less held by every open socket. Nothing was consumed from the reader yet.
        proto.start_frame_parser()
        return self.receive_data(b"")  # parse whatever the client sent early

    def _plain_accept(self, request: _RawRequest, date: bytes | None) -> bytes | None:
        """The 101 response head (without the final CRLF) when the request is a valid
        handshake that negotiates nothing; None for anything else, which websockets'
        ServerProtocol then checks and answers (with its precise error responses)."""
        method, _target, version, headers = request
        if method != "GET" or version != "1.1":
            return None
        key = ws_version = None
        upgrade = connection = False
        offers_extensions = False
        for name, value in headers:
            if name == b"sec-websocket-key":
                if key is not None:
                    return None
                key = value
            elif name == b"sec-websocket-version":
                if ws_version is not None:
                    return None
                ws_version = value
            elif name == b"upgrade":
                if upgrade or value.lower() != b"websocket":
                    return None
                upgrade = True
            elif name == b"connection":
                for token in value.split(b","):
                    token = token.strip().lower()
                    if not _TOKEN.match(token):
                        return None
                    connection = connection or token == b"upgrade"
            elif name == b"sec-websocket-extensions":
                offers_extensions = True
        if not (upgrade and connection and key is not None and ws_version == b"13"):
            return None
        if offers_extensions and self.proto.offers_extensions():
            return None  # permessage-deflate negotiation: websockets does it
        try:
            if len(base64.b64decode(key, validate=True)) != 16:
                return None
        except binascii.Error:
            return None
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        date_line = b"Date: " + date + b"\r\n" if date else b""
        return _101 + date_line + _101_UPGRADE + accept + b"\r\n"

    def reject(self) -> None:
        """Refuse the handshake with 403 (the app closed before accepting)."""
        self.request = None
        response = self.proto.reject(403, "WebSocket connection refused.\n")
        self.proto.send_response(response)

    def start_denial(
        self, status: int, headers: Iterable[tuple[bytes, bytes]], date: bytes | None
    ) -> bytes:
        """Begin an ASGI ``websocket.http.response``; returns the head to write."""
        self.request = None
        self.denial = ResponseFramer(head_request=False, keep_alive=False)
        return self.denial.head(status, headers, default_headers(date, True), None, True)

    # receiving ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Message]:
        """Feed bytes from the network; returns ASGI messages for the application."""
        self.proto.receive_data(data)
        return self._messages(self.proto.events_received())

    def receive_eof(self) -> list[Message]:
        """The peer closed the TCP stream."""
        self.proto.receive_eof()
        return self._disconnect()

    def _messages(self, events: list[Any]) -> list[Message]:
        if len(events) == 1 and not self.failed and not self.proto.protocol_failed:
            frame = events[0]
            if frame.fin and frame.opcode is Opcode.TEXT:
                # One whole text message, the usual read: skip the general loop.
                try:
                    return [{"type": "websocket.receive", "text": bytes(frame.data).decode()}]
                except UnicodeDecodeError as exc:
                    self._fail_utf8(exc)
                    return self._disconnect()
        out: list[Message] = []
        for frame in events:
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
                message = self._data_frame(frame)
                if message is not None:
                    out.append(message)
                if self.failed:
                    break
            elif opcode is Opcode.PONG:
                if self.ping_payload is not None and frame.data == self.ping_payload:
                    self.ping_payload = None
            elif opcode is Opcode.CLOSE:
                self._parts, self._decoder = [], None
                out.extend(self._disconnect())
        if (self.proto.protocol_failed or self.failed) and not self.disconnected:
            # The connection failed (1002, 1007, 1009...): the app learns of it once.
            self.error = self.error or self.proto.close_sent_reason()
            out.extend(self._disconnect())
        return out

    def _data_frame(self, frame: Frame) -> Message | None:
        if frame.opcode is not Opcode.CONT:
            self._text = frame.opcode is Opcode.TEXT
            if frame.fin:
                if self._text:
                    try:
                        return {"type": "websocket.receive", "text": bytes(frame.data).decode()}
                    except UnicodeDecodeError as exc:
                        self._fail_utf8(exc)
                        return None
                return {"type": "websocket.receive", "bytes": bytes(frame.data)}
            self._parts = []
            self._decoder = _utf8_decoder() if self._text else None
        if self._decoder is not None:
            try:
                # Validate as it arrives: an invalid fragment fails the connection now.
                self._parts.append(self._decoder.decode(frame.data, frame.fin))
            except UnicodeDecodeError as exc:
                self._fail_utf8(exc)
                return None
        else:
            self._parts.append(bytes(frame.data))
        if not frame.fin:
            return None
        parts, self._parts, self._decoder = self._parts, [], None
        if self._text:
            return {"type": "websocket.receive", "text": "".join(parts)}  # type: ignore[arg-type]
        return {"type": "websocket.receive", "bytes": b"".join(parts)}

    def _fail_utf8(self, exc: UnicodeDecodeError) -> None:
        self._parts, self._decoder = [], None
        self.failed = True
        if self.proto.state is OPEN:
            reason = f"invalid UTF-8 at position {exc.start}"
            self.proto.fail(CloseCode.INVALID_DATA, reason)
            self.error = (CloseCode.INVALID_DATA, reason)

    def _disconnect(self) -> list[Message]:
        if self.disconnected:
            return []
        self.disconnected = True
        close = self.proto.close_to_report()
        if close is None:
            return [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
        return [{"type": "websocket.disconnect", "code": close.code, "reason": close.reason}]

    def connection_lost(self) -> list[Message]:
        """The transport is gone; returns the disconnect message if not yet given."""
        return self._disconnect()

    # sending --------------------------------------------------------------------------

    def small_frame(self, data: str | bytes) -> bytes | None:
        """The wire bytes of a text (str) or binary (bytes) message of 0-125 bytes on an
        open socket without extensions, else None (the message needs :meth:`send_text` /
        :meth:`send_bytes`).

        Such a frame is two header bytes and the payload: no Frame object, no extension
        pass, no struct packing (the echo hot path)."""
        proto = self.proto
        if len(data) >= 126 or proto.state is not OPEN or proto.extensions:
            return None  # a str of 126+ characters is 126+ bytes of UTF-8 too
        if isinstance(data, str):
            payload = data.encode()
            return _SMALL_TEXT[len(payload)] + payload if len(payload) < 126 else None
        return _SMALL_BINARY[len(data)] + data

    def send_text(self, text: str) -> None:
        frame = self.small_frame(text)
        if frame is not None:
            self.proto.queue_frame(frame)
        else:
            self.proto.send_text(text.encode())

    def send_bytes(self, data: bytes) -> None:
        frame = self.small_frame(data)
        if frame is not None:
            self.proto.queue_frame(frame)
        else:
            self.proto.send_binary(data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (no-op once closing)."""
        if self.proto.state is OPEN:
            self.proto.send_close(code, reason)

    def send_ping(self, now: float) -> None:
        """Send a keep-alive ping whose pong :meth:`receive_data` will look for."""
        payload = os.urandom(4)
        self.ping_payload = payload
        self.ping_sent_at = now
        self.proto.send_ping(payload)

    def fail(self, code: int, reason: str = "") -> None:
        if self.proto.state is OPEN or self.proto.state is State.CLOSING:
            self.proto.fail(code, reason)

    def hold_pongs(self) -> None:
        """The client is not reading: keep only the latest ping's pong, unwritten."""
        self.proto.hold_pongs = True

    def release_pong(self) -> bool:
        """The client reads again: answer the latest ping held meanwhile. True when
        that queued a pong for :meth:`data_to_send`."""
        if not self.proto.hold_pongs:
            return False
        self.proto.release_pong()
        return bool(self.proto.has_output)

    def reset_control_budget(self) -> None:
        """A new window (a second) for the limit on pings and pongs received."""
        self.proto.reset_control_budget()

    def has_output(self) -> bool:
        """True when :meth:`data_to_send` has something (every state change writes)."""
        return bool(self.proto.has_output)

    def data_to_send(self) -> list[bytes]:
        """Bytes to write; an empty ``b""`` item means: half-close (send EOF)."""
        return self.proto.data_to_send()

    def close_expected(self) -> bool:
        return self.proto.close_expected()
