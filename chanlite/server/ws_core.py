"""websockets' Sans-I/O ``ServerProtocol``, extended: the one module that goes past its
documented surface.

``websockets`` documents a Sans-I/O API (``receive_data``, ``receive_eof``,
``events_received``, ``data_to_send``, ``send_*``, ``fail``, ``accept``, ``reject``,
``send_response``, ``select_subprotocol``, ``state`` to read, ``handshake_exc``,
``close_expected``). The server needs a little more: a 101 written from a template, the
frame parser started without re-parsing the request, pre-built small frames, a Close in the
middle of a fragmented message, limits on fragments and control frames, pongs held while
the client does not read, lazily created zlib streams. Every such use of websockets'
internals (``writes``, ``parser``, ``parser_exc``, ``current_size`` (``cur_size`` before
16), the ``state``
setter, ``close_rcvd``/``close_sent``, ``PerMessageDeflate``'s streams, the
``Request`` constructor) is in this module, behind the named methods of
:class:`ServerCore`; the supported versions are bounded in ``pyproject.toml`` and
``tests/server/test_ws_core.py`` checks the installed one (``make ws-oldest`` runs the
protocol tests on the oldest).
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import zlib
from collections.abc import Generator, Sequence
from typing import Any

from websockets.datastructures import Headers as WSHeaders
from websockets.exceptions import InvalidHeaderValue, ProtocolError
from websockets.extensions.base import Extension, ServerExtensionFactory
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.typing import ExtensionParameter, Subprotocol

#: The websockets versions this module is written and tested against (pyproject.toml).
SUPPORTED = ">=13,<18"
OPEN = State.OPEN
CONNECTING = State.CONNECTING
# Module globals: recv_frame runs for every frame received.
_CONT, _PING, _PONG, _CLOSE = Opcode.CONT, Opcode.PING, Opcode.PONG, Opcode.CLOSE
# websockets 17 added the request method and protocol to Request (and checks them).
_REQUEST_HAS_METHOD = "method" in {f.name for f in dataclasses.fields(Request)}
# The size of the message being received: ``cur_size`` before websockets 16.
_SIZE_ATTR = "current_size" if "current_size" in Protocol.__init__.__code__.co_names else "cur_size"


class LazyPerMessageDeflate(PerMessageDeflate):
    """permessage-deflate whose zlib streams are created on first use.

    websockets allocates both zlib streams when the handshake completes: ~35 KiB per
    socket even with small windows, most of an idle socket's memory. Here a socket that
    never sends or receives a compressed message never pays for them.
    """

    def __init__(self, eager: PerMessageDeflate) -> None:
        # Ask the parent for no zlib state (no context takeover), then restore the real
        # settings; decoder/encoder appear in __getattr__ when first used.
        super().__init__(
            True,
            True,
            eager.remote_max_window_bits,
            eager.local_max_window_bits,
            eager.compress_settings,
        )
        self.remote_no_context_takeover = eager.remote_no_context_takeover
        self.local_no_context_takeover = eager.local_no_context_takeover

    def __getattr__(self, name: str) -> Any:
        if name == "decoder":
            self.decoder = zlib.decompressobj(wbits=-self.remote_max_window_bits)
            return self.decoder
        if name == "encoder":
            self.encoder = zlib.compressobj(
                wbits=-self.local_max_window_bits, **self.compress_settings
            )
            return self.encoder
        raise AttributeError(name)


class LazyDeflateFactory(ServerPerMessageDeflateFactory):
    """Negotiates like websockets' factory; hands out :class:`LazyPerMessageDeflate`."""

    def process_request_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[Extension],
    ) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
        response, eager = super().process_request_params(params, accepted_extensions)
        return response, LazyPerMessageDeflate(eager)


def deflate_factory() -> ServerExtensionFactory:
    """permessage-deflate with 4 KiB windows and a small memLevel: ~20 KiB of zlib state
    per busy connection instead of ~300 KiB, at a small cost in ratio; none while idle."""
    return LazyDeflateFactory(
        server_max_window_bits=12,
        client_max_window_bits=12,
        compress_settings={"memLevel": 5},
    )


_DEFLATE = [deflate_factory()]  # the factory only holds settings: one for every socket
# websockets looks its logger up by name for every connection unless given one.
_LOGGER = logging.getLogger("websockets.server")


class ServerCore(ServerProtocol):
    """websockets' server protocol plus the few things the server needs beyond its
    documented API, each a named method or attribute here. Made by :func:`server_core`.

    :attr:`max_fragments` bounds the frames of one message (0-byte continuation frames
    would otherwise cost CPU and memory without counting against ``max_size``);
    :attr:`max_control_frames` bounds the pings and pongs between two calls of
    :meth:`reset_control_budget` (the I/O layer calls it once a second). Over either
    limit the connection fails with 1002 and a reason.
    """

    # Class attributes, not an __init__ of our own: every WebSocket builds one of these,
    # and websockets' __init__ is already most of a handshake's Python time. The limits
    # are the same for every connection of a server: they live on a subclass per
    # setting (server_core); the rest are defaults until a connection changes them.
    max_fragments: int | None = None
    max_control_frames: int | None = None
    fragments = 0  # frames of the message being received, after its first
    control_frames = 0  # pings and pongs since the budget was last reset
    #: While True (the client does not read), a ping's pong is not written: only the
    #: latest unanswered one is kept, for :meth:`release_pong` (RFC 6455 5.5.3).
    hold_pongs = False
    held_pong: bytes | None = None
    # The subprotocol the app passed to websocket.accept, set just before accept().
    chosen_subprotocol: str | None = None

    # the handshake --------------------------------------------------------------------

    def select_subprotocol(self, subprotocols: Sequence[Subprotocol]) -> Subprotocol | None:
        chosen = self.chosen_subprotocol
        if chosen is not None and chosen in subprotocols:
            return Subprotocol(chosen)
        return None

    def parse(self) -> Generator[None]:
        # The handshake request was already parsed by httptools and is handed to accept();
        # parsing it again would cost time and keep a second copy alive for the life of
        # the connection. Bytes that arrive before the answer wait in the reader.
        while self.state is CONNECTING:
            yield
        yield from Protocol.parse(self)

    def offers_extensions(self) -> bool:
        """Whether this server would negotiate an extension (permessage-deflate)."""
        return bool(self.available_extensions)

    def accept_request(
        self, method: str, path: str, http_version: str, headers: list[tuple[str, str]]
    ) -> Response:
        """websockets' checks of the upgrade request and its answer (101 or an error
        response, not yet sent: see ``send_response``)."""
        try:
            wsheaders = WSHeaders(headers)
        except InvalidHeaderValue as exc:  # a control character (httptools refuses them)
            self.handshake_exc = exc
            return self.reject(400, f"Failed to open a WebSocket connection: {exc}.\n")
        protocol = f"HTTP/{http_version}"
        if _REQUEST_HAS_METHOD:
            request: Any = Request  # typed per the installed version; both shapes are used
            return self.accept(request(path, wsheaders, method, protocol))
        # Before websockets 17 the request had no method or protocol to check.
        if method != "GET":
            response = self.reject(405, f"Failed to open a WebSocket connection: {method}.\n")
            response.headers["Allow"] = "GET"
            return response
        if protocol != "HTTP/1.1":
            return self.reject(505, f"Failed to open a WebSocket connection: {protocol}.\n")
        return self.accept(Request(path, wsheaders))

    def open_with(self, head: bytes) -> None:
        """Queue a ready-made 101 response (a template's) and enter the OPEN state, as
        ``accept`` + ``send_response`` would."""
        self.writes.append(head)
        self.state = OPEN

    def start_frame_parser(self) -> None:
        """After the handshake: swap the waiting generator for websockets' frame parser
        itself (one generator frame less held by every open socket). Nothing was consumed
        from the reader yet."""
        self.parser = Protocol.parse(self)
        next(self.parser)

    # frames ---------------------------------------------------------------------------

    def recv_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is _CONT:
            if frame.fin:
                self.fragments = 0
            else:
                self.fragments += 1
                if self.max_fragments is not None and self.fragments >= self.max_fragments:
                    raise ProtocolError("too many fragments")
        elif opcode is _PING or opcode is _PONG:
            self.control_frames += 1
            limit = self.max_control_frames
            if limit is not None and self.control_frames > limit:
                raise ProtocolError("too many control frames")
            if opcode is _PING and self.hold_pongs and self.state is OPEN:
                self.held_pong = bytes(frame.data)  # answered by release_pong
                self.events.append(frame)
                return
        elif opcode is _CLOSE and getattr(self, _SIZE_ATTR) is not None:
            # RFC 6455 5.4 lets control frames arrive between the fragments of a message,
            # and a Close ends the connection, unfinished message included: answer it
            # normally instead of failing with 1002 (Autobahn case 7.1.5).
            setattr(self, _SIZE_ATTR, None)
        super().recv_frame(frame)

    def reset_control_budget(self) -> None:
        """Start a new window for the control-frame limit."""
        self.control_frames = 0

    def release_pong(self) -> None:
        """Answer the latest ping held while :attr:`hold_pongs` was set (if still open)."""
        self.hold_pongs = False
        held, self.held_pong = self.held_pong, None
        if held is not None and self.state is OPEN:
            self.send_pong(held)

    def queue_frame(self, data: bytes) -> None:
        """Queue wire bytes built elsewhere (a small data frame) in order with the rest."""
        self.writes.append(data)

    # Read for every message received: C getters, not Python property frames.
    #: Truthy when ``data_to_send`` has something (the pending writes).
    has_output = property(operator.attrgetter("writes"))
    #: Truthy once the peer broke the protocol (the error; websockets sent its close).
    protocol_failed = property(operator.attrgetter("parser_exc"))

    def close_to_report(self) -> Close | None:
        """The Close that ended the connection as the app should hear of it: the
        client's, unless ours went first and theirs only answered it; None if neither."""
        close: Close | None = self.close_rcvd
        if close is None or self.close_rcvd_then_sent is None:
            close = self.close_sent if self.close_sent is not None else close
        return close

    def close_sent_reason(self) -> tuple[int, str] | None:
        """The code and reason of the Close this side sent, if it sent one."""
        close = self.close_sent
        return None if close is None else (close.code, close.reason)


_CORES: dict[tuple[int | None, int | None], type[ServerCore]] = {}


def server_core(
    max_size: int | None = 2**20,
    per_message_deflate: bool = True,
    max_fragments: int | None = None,
    max_control_frames: int | None = None,
) -> ServerCore:
    """A :class:`ServerCore` with these limits (``None``: no limit)."""
    key = (max_fragments, max_control_frames)
    cls = _CORES.get(key)
    if cls is None:
        attrs = {"max_fragments": max_fragments, "max_control_frames": max_control_frames}
        cls = _CORES[key] = type("ServerCore", (ServerCore,), attrs)
    return cls(
        extensions=_DEFLATE if per_message_deflate else None,
        max_size=max_size,
        logger=_LOGGER,
    )
