"""Property-based fuzzing of the protocol objects (hypothesis): no I/O, so thousands of
inputs a second.

* Any split of a valid byte stream gives the same events as the whole stream.
* Arbitrary bytes never raise: the parser answers with its documented events
  (``BadRequest`` for HTTP, a close code and one ``websocket.disconnect`` for WebSocket).

The normal suite runs a short pass (``CHANLITE_FUZZ_EXAMPLES``, 150 by default, a few
seconds); ``make fuzz`` runs the same properties with many more examples.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Close, Frame, Opcode

from chanlite.server.http import (
    BadRequest,
    Body,
    MessageEnd,
    RequestHead,
    RequestParser,
    Upgrade,
)
from chanlite.server.websocket import WebSocketProtocol

EXAMPLES = int(os.environ.get("CHANLITE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HANDSHAKE = [
    (b"host", b"t"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
]


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """*data* cut at arbitrary points."""
    cuts = st.lists(st.integers(0, len(data)), max_size=min(len(data), 40))
    return cuts.map(lambda points: _cut(data, sorted(set(points))))


def _cut(data: bytes, points: list[int]) -> list[bytes]:
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


# HTTP ---------------------------------------------------------------------------------


def http_summary(pieces: list[bytes]) -> list[Any]:
    """The parser's events for *pieces*, with bodies joined per request (how a body is
    cut into Body events depends on the reads; what it adds up to must not)."""
    parser = RequestParser()
    out: list[Any] = []
    for piece in pieces:
        for event in parser.feed(piece):
            if isinstance(event, RequestHead):
                out.append(["head", event.method, event.raw_path, event.query, event.headers])
                out.append(["body", b""])
            elif isinstance(event, Body):
                out[-1][1] += event.data
            elif isinstance(event, MessageEnd):
                out.append(["end"])
            elif isinstance(event, Upgrade):
                out.append(["upgrade", event.head.raw_path, event.trailing])
            else:
                out.append(["bad", event.status])
    return out


HTTP_STREAM = (
    b"POST /submit?x=1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    b"GET /a%20b HTTP/1.1\r\nHost: t\r\nX-Many: 1\r\nX-Many: 2\r\n\r\n"
    b"PUT /p HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world"
    b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
)


@FUZZ
@given(splits(HTTP_STREAM))
def test_http_any_split_gives_the_same_events(pieces: list[bytes]) -> None:
    whole = http_summary([HTTP_STREAM])
    assert whole[-1][0] == "upgrade"
    # The bytes after an Upgrade are the next protocol's, however they were read.
    got = http_summary(pieces)
    assert got[:-1] == whole[:-1] and got[-1][:2] == whole[-1][:2]


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=10))
def test_http_arbitrary_bytes_never_raise(pieces: list[bytes]) -> None:
    parser = RequestParser(limit_line=256, limit_fields=20, limit_header_size=1024)
    for piece in pieces:
        for event in parser.feed(b"GET / HTTP/1.1\r\n" + piece if piece[:1] == b"!" else piece):
            assert isinstance(event, RequestHead | Body | MessageEnd | Upgrade | BadRequest)
            if isinstance(event, BadRequest):
                assert 400 <= event.status < 500 and event.reason
                assert parser.done
    assert not parser.done or parser.feed(b"GET / HTTP/1.1\r\n\r\n") == []


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.from_regex(rb"\A[A-Za-z][A-Za-z0-9-]{0,20}\Z"),
            st.binary(max_size=40).filter(lambda v: b"\r" not in v and b"\n" not in v),
        ),
        max_size=8,
    )
)
def test_http_arbitrary_headers_never_raise(headers: list[tuple[bytes, bytes]]) -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    for event in RequestParser().feed(data + b"\r\n"):
        assert isinstance(event, RequestHead | MessageEnd | Upgrade | BadRequest)


# WebSocket ----------------------------------------------------------------------------


def opened(**options: Any) -> WebSocketProtocol:
    ws = WebSocketProtocol(per_message_deflate=False, **options)
    ws.receive_handshake("GET", b"/ws", "1.1", HANDSHAKE)
    ws.accept(None, [])
    ws.data_to_send()
    return ws


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True, extensions=[])


TEXT = "h\u00e9llo w\u00f6rld \u20ac\U0001f600".encode()
WS_STREAM = (
    masked(Opcode.TEXT, b"plain")
    + masked(Opcode.TEXT, TEXT[:2], fin=False)  # the cut splits a UTF-8 character
    + masked(Opcode.PING, b"in between")
    + masked(Opcode.CONT, TEXT[2:9], fin=False)
    + masked(Opcode.CONT, TEXT[9:])
    + masked(Opcode.BINARY, bytes(range(256)) * 3)
    + masked(Opcode.PONG, b"unsolicited")
    + masked(Opcode.BINARY, b"\x00", fin=False)
    + masked(Opcode.CONT, b"")
    + masked(Opcode.CLOSE, Close(1000, "done").serialize())
)


def ws_run(pieces: list[bytes]) -> tuple[list[Any], bytes]:
    ws = opened(max_size=4096)
    messages: list[Any] = []
    for piece in pieces:
        messages.extend(ws.receive_data(piece))
    return messages, b"".join(ws.data_to_send())


@FUZZ
@given(splits(WS_STREAM))
def test_websocket_any_split_gives_the_same_messages_and_replies(pieces: list[bytes]) -> None:
    messages, output = ws_run(pieces)
    assert (messages, output) == ws_run([WS_STREAM])
    assert messages[1] == {"type": "websocket.receive", "text": TEXT.decode()}
    assert messages[-1] == {"type": "websocket.disconnect", "code": 1000, "reason": "done"}


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=12), st.booleans())
def test_websocket_arbitrary_bytes_never_raise(pieces: list[bytes], frame_start: bool) -> None:
    ws = opened(max_size=1024, max_fragments=8, max_control_frames=8)
    messages: list[Any] = []
    for piece in pieces:
        if frame_start and piece:
            piece = bytes((piece[0] | 0x80,)) + piece[1:2] + b"\0\0\0\0" + piece[2:]
        messages.extend(ws.receive_data(piece))
        ws.data_to_send()
    messages.extend(ws.receive_eof())
    disconnects = [m for m in messages if m["type"] == "websocket.disconnect"]
    assert len(disconnects) == 1 and messages[-1] is disconnects[0]
    assert all(m["type"] == "websocket.receive" for m in messages[:-1])
    code = disconnects[0]["code"]
    assert code in (1000, 1001, 1002, 1005, 1006, 1007, 1009) or 3000 <= code < 5000
    if code in (1002, 1007, 1009):
        assert ws.error is not None and ws.error[0] == code


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [b"sec-websocket-key", b"sec-websocket-version", b"upgrade", b"connection",
                 b"sec-websocket-extensions", b"sec-websocket-protocol", b"origin"]
            ),
            st.binary(max_size=40).filter(lambda v: b"\r" not in v and b"\n" not in v),
        ),
        max_size=8,
    ),
    st.sampled_from(["GET", "POST"]),
    st.sampled_from(["1.1", "1.0"]),
    st.booleans(),
)  # fmt: skip
def test_websocket_arbitrary_handshakes_are_accepted_or_refused(
    headers: list[tuple[bytes, bytes]], method: str, version: str, deflate: bool
) -> None:
    ws = WebSocketProtocol(per_message_deflate=deflate)
    ws.receive_handshake(method, b"/ws", version, [*HANDSHAKE, *headers])
    early = ws.accept(None, [])
    out = ws.data_to_send()
    if early is None:
        assert (out[0][:9] == b"HTTP/1.1 " and out[0][9:10] == b"4") or out[0][9:12] == b"505"
        assert ws.refusal
    else:
        assert out[0].startswith(b"HTTP/1.1 101 ") and ws.is_open
