"""The Sans-I/O protocol modules fed literal bytes: no sockets, no loop."""

from __future__ import annotations

import pytest
from websockets.frames import Close, Frame, Opcode

from chanlite.server.http import (
    BadRequest,
    Body,
    MessageEnd,
    RequestHead,
    RequestParser,
    ResponseError,
    ResponseFramer,
    Upgrade,
)
from chanlite.server.websocket import WebSocketProtocol

REQUEST = (
    b"POST /p%C3%A5th?q=1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n"
    b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n"
)


def kinds(events: list[object]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_parser_events_whole_and_byte_by_byte() -> None:
    whole = RequestParser().feed(REQUEST)
    assert kinds(whole) == [
        "RequestHead",
        "Body",
        "Body",
        "MessageEnd",
        "RequestHead",
        "MessageEnd",
    ]
    head = whole[0]
    assert isinstance(head, RequestHead)
    assert (head.method, head.path, head.raw_path, head.query) == (
        "POST",
        "/påth",
        b"/p%C3%A5th",
        b"q=1",
    )
    assert head.keep_alive and head.http_version == "1.1"
    parser = RequestParser()
    events = []
    for i in range(len(REQUEST)):
        events.extend(parser.feed(REQUEST[i : i + 1]))
    body = b"".join(e.data for e in events if isinstance(e, Body))
    assert body == b"wikipedia"
    assert sum(isinstance(e, MessageEnd) for e in events) == 2


def test_parser_upgrade_keeps_trailing_bytes() -> None:
    events = RequestParser().feed(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nFRAMES"
    )
    assert len(events) == 1 and isinstance(events[0], Upgrade)
    assert events[0].trailing == b"FRAMES"
    assert events[0].head.websocket


def test_parser_limits() -> None:
    parser = RequestParser(limit_line=10)
    (event,) = parser.feed(b"GET /0123456789 HTTP/1.1\r\n\r\n")
    assert isinstance(event, BadRequest) and event.status == 414
    assert parser.feed(b"more") == []  # finished after an error


def test_framer_chooses_content_length_or_chunked() -> None:
    single = ResponseFramer(head_request=False, keep_alive=True)
    head = single.head(200, [(b"x", b"1")], b"", 5, True)
    assert head == b"HTTP/1.1 200 OK\r\nx: 1\r\ncontent-length: 5\r\n\r\n"
    assert single.body(b"hello", False) == b"hello" and single.complete

    stream = ResponseFramer(head_request=False, keep_alive=True)
    assert b"transfer-encoding: chunked" in stream.head(200, [], b"", None, True)
    assert stream.body(b"abc", True) == b"3\r\nabc\r\n"
    assert stream.body(b"", False) == b"0\r\n\r\n"

    http10 = ResponseFramer(head_request=False, keep_alive=True)
    assert b"connection: close" in http10.head(200, [], b"", None, False)
    assert not http10.keep_alive

    with pytest.raises(ResponseError):
        ResponseFramer(False, True).head(200, [(b"x", b"a\r\nInjected: 1")], b"", 0, True)
    short = ResponseFramer(False, True)
    short.head(200, [(b"content-length", b"10")], b"", None, True)
    with pytest.raises(ResponseError):
        short.body(b"abc", False)


HANDSHAKE = [
    (b"host", b"t"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
]


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True, extensions=[])


def test_websocket_handshake_messages_and_close() -> None:
    ws = WebSocketProtocol(max_size=100, per_message_deflate=False)
    ws.receive_handshake("GET", b"/ws", "1.1", HANDSHAKE)
    early = masked(Opcode.TEXT, b"sent before the answer")
    assert ws.receive_data(early) == []  # waits for the handshake's answer
    assert ws.accept(None, [(b"x-extra", b"1")]) == [
        {"type": "websocket.receive", "text": "sent before the answer"}
    ]
    (response,) = ws.data_to_send()
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in response
    assert b"x-extra: 1" in response
    messages = ws.receive_data(
        masked(Opcode.TEXT, "h\u00e9".encode()[:2], fin=False)
        + masked(Opcode.CONT, "h\u00e9".encode()[2:])
        + masked(Opcode.BINARY, b"\x00\x01")
    )
    assert messages == [
        {"type": "websocket.receive", "text": "h\u00e9"},
        {"type": "websocket.receive", "bytes": b"\x00\x01"},
    ]
    ws.send_text("ok")
    assert ws.data_to_send() == [b"\x81\x02ok"]
    messages = ws.receive_data(masked(Opcode.CLOSE, Close(1000, "bye").serialize()))
    assert messages == [{"type": "websocket.disconnect", "code": 1000, "reason": "bye"}]
    echoed, eof = ws.data_to_send()
    assert echoed == b"\x88\x05\x03\xe8bye" and eof == b""


def test_websocket_failures() -> None:
    ws = WebSocketProtocol(max_size=10, per_message_deflate=False)
    ws.receive_handshake("GET", b"/ws", "1.1", HANDSHAKE)
    ws.accept(None, [])
    ws.data_to_send()
    (message,) = ws.receive_data(masked(Opcode.TEXT, b"x" * 11))
    assert message["code"] == 1009

    ws = WebSocketProtocol(per_message_deflate=False)
    ws.receive_handshake("GET", b"/ws", "1.1", HANDSHAKE)
    ws.accept(None, [])
    ws.data_to_send()
    (message,) = ws.receive_data(masked(Opcode.TEXT, b"\xff", fin=False))
    assert message["code"] == 1007
    close = ws.data_to_send()[0]
    assert close[0] == 0x88 and close[2:4] == b"\x03\xef"  # a close frame with code 1007


def test_websocket_invalid_handshake_is_answered_400() -> None:
    ws = WebSocketProtocol()
    ws.receive_handshake("GET", b"/ws", "1.1", HANDSHAKE[:3])  # no key, no version
    assert ws.accept(None, []) is None
    response, eof = ws.data_to_send()
    assert response.startswith(b"HTTP/1.1 400 ") and eof == b""


def test_deflate_state_is_created_on_first_use() -> None:
    from websockets.client import ClientProtocol
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    from websockets.protocol import State
    from websockets.uri import parse_uri

    from chanlite.server.ws_core import LazyPerMessageDeflate

    ws = WebSocketProtocol()
    offer = (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits")
    ws.receive_handshake("GET", b"/ws", "1.1", [*HANDSHAKE, offer])
    ws.accept(None, [])
    response = ws.data_to_send()[0]
    assert b"server_max_window_bits=12" in response and b"client_max_window_bits=12" in response
    (extension,) = ws.proto.extensions
    assert isinstance(extension, LazyPerMessageDeflate)
    assert "encoder" not in vars(extension) and "decoder" not in vars(extension)
    # A client with the same settings talks to it; both directions compress.
    client = ClientProtocol(
        parse_uri("ws://x/"),
        extensions=[ClientPerMessageDeflateFactory(client_max_window_bits=12)],
        state=State.OPEN,
    )
    client.extensions = [
        ClientPerMessageDeflateFactory(client_max_window_bits=12).process_response_params(
            [("server_max_window_bits", "12"), ("client_max_window_bits", "12")], []
        )
    ]
    for text in ("hello " * 50, "again " * 50):
        client.send_text(text.encode())
        (data,) = client.data_to_send()
        assert data[0] & 0x40  # RSV1: compressed
        assert ws.receive_data(data) == [{"type": "websocket.receive", "text": text}]
        ws.send_text(text)
        (out,) = ws.data_to_send()
        assert out[0] & 0x40 and len(out) < len(text)
        client.receive_data(out)
        (frame,) = client.events_received()
        assert isinstance(frame, Frame) and frame.data.decode() == text
    assert "encoder" in vars(extension) and "decoder" in vars(extension)
