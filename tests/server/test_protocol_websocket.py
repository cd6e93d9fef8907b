"""RFC 6455 as a protocol, fed literal bytes: :class:`WebSocketProtocol` (and the
:class:`ServerCore` under it) without a socket, a loop or a clock."""

from __future__ import annotations

import pytest
from websockets.frames import Close, Frame, Opcode

from chanlite.server.websocket import WebSocketProtocol

KEY = (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
HANDSHAKE = [
    (b"host", b"t"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    KEY,
    (b"sec-websocket-version", b"13"),
]


def masked(opcode: Opcode, data: bytes = b"", fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True, extensions=[])


def raw(first: int, payload: bytes) -> bytes:
    """A masked client frame built by hand (all-zero mask), for frames websockets' own
    serializer refuses to build: *first* is the FIN/RSV/opcode byte."""
    n = len(payload)
    length = bytes((0x80 | n,)) if n < 126 else b"\xfe" + n.to_bytes(2, "big")
    return bytes((first,)) + length + b"\0\0\0\0" + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return Close(code, reason).serialize()


def unmask_server_frames(data: bytes) -> list[Frame]:
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.uri import parse_uri

    client = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN, max_size=None)
    client.receive_data(data)
    return [e for e in client.events_received() if isinstance(e, Frame)]


def opened(**options: object) -> WebSocketProtocol:
    """A protocol after a plain handshake, its 101 already taken."""
    options.setdefault("per_message_deflate", False)
    ws = WebSocketProtocol(**options)  # type: ignore[arg-type]
    ws.receive_handshake("GET", b"/ws", "1.1", HANDSHAKE)
    assert ws.accept(None, []) == []
    (response,) = ws.data_to_send()
    assert response.startswith(b"HTTP/1.1 101 ")
    return ws


def sent(ws: WebSocketProtocol) -> list[Frame]:
    """The frames the server wrote since the last call (an EOF marker is dropped)."""
    return unmask_server_frames(b"".join(ws.data_to_send()))


def close_of(ws: WebSocketProtocol) -> Close:
    frames = [f for f in sent(ws) if f.opcode is Opcode.CLOSE]
    assert len(frames) == 1, frames
    return Close.parse(frames[0].data)


def disconnect(messages: list[dict[str, object]]) -> tuple[object, object]:
    assert messages and messages[-1]["type"] == "websocket.disconnect", messages
    return messages[-1]["code"], messages[-1]["reason"]


# the handshake -------------------------------------------------------------------------


def test_the_plain_accept_path_answers_from_the_template() -> None:
    ws = WebSocketProtocol(per_message_deflate=False)
    ws.receive_handshake("GET", b"/ws", "1.1", HANDSHAKE)
    ws.accept(None, [(b"x-app", b"1")], date=b"Thu, 01 Jan 2026 00:00:00 GMT")
    (response,) = ws.data_to_send()
    assert response == (
        b"HTTP/1.1 101 Switching Protocols\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + ACCEPT
        + b"\r\nx-app: 1\r\n\r\n"
    )  # fmt: skip
    assert ws.is_open


def test_a_subprotocol_goes_through_websockets_accept() -> None:
    ws = WebSocketProtocol(per_message_deflate=False)
    ws.receive_handshake("GET", b"/ws", "1.1", [*HANDSHAKE, (b"sec-websocket-protocol", b"a, b")])
    ws.accept("b", [])
    (response,) = ws.data_to_send()
    assert b"Sec-WebSocket-Protocol: b\r\n" in response and ACCEPT in response


def test_a_subprotocol_the_client_did_not_offer_is_not_sent() -> None:
    ws = WebSocketProtocol(per_message_deflate=False)
    ws.receive_handshake("GET", b"/ws", "1.1", [*HANDSHAKE, (b"sec-websocket-protocol", b"a")])
    ws.accept("zzz", [])
    (response,) = ws.data_to_send()
    assert response.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Protocol" not in response


def test_an_extension_offer_without_deflate_configured_stays_on_the_template() -> None:
    ws = WebSocketProtocol(per_message_deflate=False)
    offer = (b"sec-websocket-extensions", b"permessage-deflate")
    ws.receive_handshake("GET", b"/ws", "1.1", [*HANDSHAKE, offer])
    ws.accept(None, [], date=b"D")
    (response,) = ws.data_to_send()
    assert b"Date: D\r\n" in response and b"Sec-WebSocket-Extensions" not in response


def test_the_apps_negotiated_headers_are_ignored_and_unsafe_ones_refused() -> None:
    ws = WebSocketProtocol(per_message_deflate=False)
    ws.receive_handshake("GET", b"/ws", "1.1", HANDSHAKE)
    ws.accept(None, [(b"Sec-WebSocket-Protocol", b"forged"), (b"x-ok", b"1")])
    (response,) = ws.data_to_send()
    assert b"forged" not in response and b"x-ok: 1" in response
    ws = WebSocketProtocol(per_message_deflate=False)
    ws.receive_handshake("GET", b"/ws", "1.1", HANDSHAKE)
    with pytest.raises(ValueError, match="invalid header"):
        ws.accept(None, [(b"x", b"a\r\nInjected: 1")])


@pytest.mark.parametrize(
    ("method", "version", "headers", "status"),
    [
        ("GET", "1.1", [*HANDSHAKE[:3], (b"sec-websocket-key", b"short"), HANDSHAKE[4]], 400),
        ("GET", "1.1", HANDSHAKE[:3], 400),
        ("GET", "1.1", [*HANDSHAKE[:4], (b"sec-websocket-version", b"8")], 400),
        ("GET", "1.1", [KEY, *HANDSHAKE[1:2], (b"connection", b"keep-alive"), HANDSHAKE[4]], 426),
        ("POST", "1.1", HANDSHAKE, 405),
        ("GET", "1.0", HANDSHAKE, 505),
    ],
    ids=["bad-key", "no-key", "version-8", "no-connection-upgrade", "post", "http-10"],
)
def test_invalid_handshakes_are_refused_with_a_reason(
    method: str, version: str, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    ws = WebSocketProtocol()
    ws.receive_handshake(method, b"/ws", version, headers)
    assert ws.accept(None, []) is None
    response, eof = ws.data_to_send()
    assert response.startswith(b"HTTP/1.1 %d " % status) and eof == b""
    assert ws.refusal.startswith(f"{status} ") and len(ws.refusal) > 4


def test_reject_is_403() -> None:
    ws = WebSocketProtocol()
    ws.receive_handshake("GET", b"/ws", "1.1", HANDSHAKE)
    ws.reject()
    response, eof = ws.data_to_send()
    assert response.startswith(b"HTTP/1.1 403 ") and eof == b""


def test_a_denial_response_head() -> None:
    ws = WebSocketProtocol()
    ws.receive_handshake("GET", b"/ws", "1.1", HANDSHAKE)
    head = ws.start_denial(401, [(b"x-why", b"token")], b"D")
    assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n") and b"x-why: token\r\n" in head
    assert ws.denial is not None and ws.denial.body(b"no", False) == b"2\r\nno\r\n0\r\n\r\n"


def test_frames_sent_before_the_answer_wait_for_it() -> None:
    ws = WebSocketProtocol(per_message_deflate=False)
    ws.receive_handshake("GET", b"/ws", "1.1", HANDSHAKE)
    assert ws.receive_data(masked(Opcode.TEXT, b"early") + masked(Opcode.BINARY, b"\x01")) == []
    assert ws.accept(None, []) == [
        {"type": "websocket.receive", "text": "early"},
        {"type": "websocket.receive", "bytes": b"\x01"},
    ]


# receiving -----------------------------------------------------------------------------


def test_one_text_frame() -> None:
    ws = opened()
    assert ws.receive_data(masked(Opcode.TEXT, "h\u00e9".encode())) == [
        {"type": "websocket.receive", "text": "h\u00e9"}
    ]


def test_one_binary_frame() -> None:
    assert opened().receive_data(masked(Opcode.BINARY, b"\x00\xff")) == [
        {"type": "websocket.receive", "bytes": b"\x00\xff"}
    ]


def test_an_empty_text_frame() -> None:
    assert opened().receive_data(masked(Opcode.TEXT)) == [{"type": "websocket.receive", "text": ""}]


def test_a_frame_byte_by_byte() -> None:
    ws = opened()
    data = masked(Opcode.TEXT, b"x" * 300)
    out = []
    for i in range(len(data)):
        out.extend(ws.receive_data(data[i : i + 1]))
    assert out == [{"type": "websocket.receive", "text": "x" * 300}]


def test_text_in_three_fragments() -> None:
    ws = opened()
    assert ws.receive_data(masked(Opcode.TEXT, b"one ", fin=False)) == []
    assert ws.receive_data(masked(Opcode.CONT, b"two ", fin=False)) == []
    assert ws.receive_data(masked(Opcode.CONT, b"three")) == [
        {"type": "websocket.receive", "text": "one two three"}
    ]


def test_binary_in_fragments() -> None:
    ws = opened()
    data = masked(Opcode.BINARY, b"\x00", fin=False) + masked(Opcode.CONT, b"\x01")
    assert ws.receive_data(data) == [{"type": "websocket.receive", "bytes": b"\x00\x01"}]


def test_utf8_split_across_fragments_byte_by_byte() -> None:
    text = "\u00e5\u20ac\U0001f600"
    encoded = text.encode()
    ws = opened()
    data = masked(Opcode.TEXT, encoded[:1], fin=False)
    for i in range(1, len(encoded) - 1):
        data += masked(Opcode.CONT, encoded[i : i + 1], fin=False)
    data += masked(Opcode.CONT, encoded[-1:])
    assert ws.receive_data(data) == [{"type": "websocket.receive", "text": text}]


def test_invalid_utf8_in_a_middle_fragment_fails_at_once() -> None:
    ws = opened()
    assert ws.receive_data(masked(Opcode.TEXT, b"ok", fin=False)) == []
    messages = ws.receive_data(masked(Opcode.CONT, b"\xff", fin=False))  # no final frame yet
    assert disconnect(messages)[0] == 1007
    assert close_of(ws).code == 1007
    assert ws.error is not None and ws.error[0] == 1007 and "invalid UTF-8" in ws.error[1]


def test_invalid_utf8_in_one_frame() -> None:
    ws = opened()
    assert disconnect(ws.receive_data(masked(Opcode.TEXT, b"a\xc3(")))[0] == 1007


def test_a_message_ending_inside_a_utf8_character_fails() -> None:
    ws = opened()
    data = masked(Opcode.TEXT, b"a", fin=False) + masked(Opcode.CONT, "\u20ac".encode()[:2])
    assert disconnect(ws.receive_data(data))[0] == 1007


def test_a_ping_between_fragments_is_answered_and_the_message_kept() -> None:
    ws = opened()
    data = (
        masked(Opcode.TEXT, b"frag", fin=False)
        + masked(Opcode.PING, b"mid")
        + masked(Opcode.CONT, b"ment")
    )
    assert ws.receive_data(data) == [{"type": "websocket.receive", "text": "fragment"}]
    (pong,) = sent(ws)
    assert (pong.opcode, pong.data) == (Opcode.PONG, b"mid")


def test_a_close_during_a_fragmented_message_is_a_normal_close() -> None:
    ws = opened()
    assert ws.receive_data(masked(Opcode.TEXT, b"half", fin=False)) == []
    messages = ws.receive_data(masked(Opcode.CLOSE, close_payload(1000, "bye")))
    assert messages == [{"type": "websocket.disconnect", "code": 1000, "reason": "bye"}]
    assert close_of(ws).code == 1000 and ws.error is None


def test_a_ping_is_answered_with_its_payload() -> None:
    ws = opened()
    assert ws.receive_data(masked(Opcode.PING, b"payload")) == []
    (pong,) = sent(ws)
    assert (pong.opcode, pong.data) == (Opcode.PONG, b"payload")


def test_an_unsolicited_pong_is_ignored() -> None:
    ws = opened()
    assert ws.receive_data(masked(Opcode.PONG, b"whatever")) == []
    assert not ws.has_output()


def test_keepalive_ping_bookkeeping() -> None:
    ws = opened()
    ws.send_ping(12.5)
    (ping,) = sent(ws)
    assert ping.opcode is Opcode.PING and len(ping.data) == 4
    assert ws.ping_payload == ping.data and ws.ping_sent_at == 12.5
    ws.receive_data(masked(Opcode.PONG, b"nope"))
    assert ws.ping_payload == ping.data  # not the answer
    ws.receive_data(masked(Opcode.PONG, ping.data))
    assert ws.ping_payload is None


def test_pongs_are_held_while_the_client_does_not_read() -> None:
    ws = opened()
    ws.hold_pongs()
    ws.receive_data(b"".join(masked(Opcode.PING, b"%d" % i) for i in range(5)))
    assert not ws.has_output()  # no pong written while held
    assert ws.release_pong()
    (pong,) = sent(ws)
    assert pong.data == b"4"  # only the latest (RFC 6455 5.5.3)
    assert not ws.release_pong()  # nothing held any more


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (raw(0x89, b"x" * 126), 1002),  # control frame over 125 bytes
        (raw(0x09, b"x"), 1002),  # fragmented control frame
        (masked(Opcode.CONT, b"x"), 1002),  # continuation without a start
        (masked(Opcode.TEXT, b"a", fin=False) + masked(Opcode.TEXT, b"b"), 1002),
        (raw(0xC1, b"x"), 1002),  # RSV1 without an extension
        (b"\x83\x80abcd", 1002),  # reserved opcode 3
        (b"\x81\x05hello", 1002),  # a client frame without a mask
        (raw(0x88, b"\x03"), 1002),  # a one-byte close payload
        (raw(0x88, b"\x03\xed"), 1002),  # code 1005 may not be sent
        (raw(0x88, b"\x03\xe8\xff"), 1007),  # close reason not UTF-8
    ],
    ids=[
        "long-ping", "fragmented-ping", "lone-continuation", "text-inside-text", "rsv1",
        "reserved-opcode", "unmasked", "short-close", "close-1005", "close-reason-utf8",
    ],
)  # fmt: skip
def test_protocol_violations_close_with_the_right_code(data: bytes, code: int) -> None:
    ws = opened()
    messages = ws.receive_data(data)
    assert disconnect(messages)[0] == code
    assert close_of(ws).code == code
    assert ws.error is not None and ws.error[0] == code and ws.error[1]


def test_an_oversize_frame_is_1009() -> None:
    ws = opened(max_size=10)
    assert disconnect(ws.receive_data(masked(Opcode.BINARY, b"x" * 11)))[0] == 1009
    assert ws.receive_data(masked(Opcode.TEXT, b"ignored")) == []  # nothing after a failure


def test_an_oversize_message_over_fragments_is_1009() -> None:
    ws = opened(max_size=10)
    data = masked(Opcode.TEXT, b"x" * 6, fin=False) + masked(Opcode.CONT, b"x" * 6)
    assert disconnect(ws.receive_data(data))[0] == 1009


def test_a_message_of_exactly_max_size_is_fine() -> None:
    ws = opened(max_size=10)
    assert ws.receive_data(masked(Opcode.BINARY, b"x" * 10)) == [
        {"type": "websocket.receive", "bytes": b"x" * 10}
    ]


def test_too_many_fragments_is_1002() -> None:
    ws = opened(max_fragments=4)
    data = masked(Opcode.TEXT, b"", fin=False) + masked(Opcode.CONT, b"", fin=False) * 4
    assert disconnect(ws.receive_data(data))[0] == 1002
    assert ws.error == (1002, "too many fragments")


def test_fragments_under_the_limit_are_fine_message_after_message() -> None:
    ws = opened(max_fragments=4)
    message = (
        masked(Opcode.TEXT, b"a", fin=False)
        + masked(Opcode.CONT, b"b", fin=False) * 3
        + masked(Opcode.CONT, b"c")
    )
    for _ in range(3):  # the count starts again with each message
        assert ws.receive_data(message) == [{"type": "websocket.receive", "text": "abbbc"}]


def test_too_many_control_frames_is_1002_until_the_budget_resets() -> None:
    ws = opened(max_control_frames=3)
    assert ws.receive_data(masked(Opcode.PING) * 3) == []
    sent(ws)
    ws.reset_control_budget()
    assert ws.receive_data(masked(Opcode.PONG) * 3) == []
    assert disconnect(ws.receive_data(masked(Opcode.PING)))[0] == 1002
    assert ws.error == (1002, "too many control frames")


def test_a_client_close_is_echoed_and_the_connection_ends() -> None:
    ws = opened()
    messages = ws.receive_data(masked(Opcode.CLOSE, close_payload(4000, "done")))
    assert messages == [{"type": "websocket.disconnect", "code": 4000, "reason": "done"}]
    echoed, eof = ws.data_to_send()
    assert unmask_server_frames(echoed)[0].data == close_payload(4000, "done") and eof == b""


def test_an_empty_close_is_1005_to_the_app() -> None:
    ws = opened()
    assert disconnect(ws.receive_data(masked(Opcode.CLOSE)))[0] == 1005


def test_eof_without_a_close_is_1006_once() -> None:
    ws = opened()
    assert ws.receive_eof() == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    assert ws.connection_lost() == []


def test_frames_after_the_close_are_ignored() -> None:
    ws = opened()
    ws.receive_data(masked(Opcode.CLOSE, close_payload(1000)))
    assert ws.receive_data(masked(Opcode.TEXT, b"late")) == []


# sending -------------------------------------------------------------------------------


def test_the_small_frame_fast_path() -> None:
    ws = opened()
    assert ws.small_frame("hi") == b"\x81\x02hi"
    assert ws.small_frame(b"\x00") == b"\x82\x01\x00"
    assert ws.small_frame("x" * 125) == b"\x81\x7d" + b"x" * 125
    assert ws.small_frame("x" * 126) is None  # needs the 16-bit length
    assert ws.small_frame("\u00e9" * 100) is None  # 100 characters, 200 bytes


def test_small_frames_go_out_in_order_with_large_ones() -> None:
    ws = opened()
    ws.send_text("a")
    ws.send_bytes(b"b" * 200)
    ws.send_text("c")
    frames = sent(ws)
    assert [(f.opcode, len(f.data)) for f in frames] == [
        (Opcode.TEXT, 1),
        (Opcode.BINARY, 200),
        (Opcode.TEXT, 1),
    ]


def test_a_large_text_message_has_the_16_bit_length() -> None:
    ws = opened()
    ws.send_text("y" * 1000)
    (data,) = ws.data_to_send()
    assert data[:4] == b"\x81\x7e\x03\xe8" and len(data) == 1004


def test_no_small_frame_once_closing() -> None:
    ws = opened()
    ws.close(1000, "")
    assert ws.small_frame("hi") is None


def test_no_small_frame_when_compressing() -> None:
    ws = WebSocketProtocol()
    offer = (b"sec-websocket-extensions", b"permessage-deflate")
    ws.receive_handshake("GET", b"/ws", "1.1", [*HANDSHAKE, offer])
    ws.accept(None, [])
    ws.data_to_send()
    assert ws.small_frame("hi") is None


def test_close_once_then_nothing() -> None:
    ws = opened()
    ws.close(1001, "going")
    assert close_of(ws) == Close(1001, "going")
    ws.close(1000, "again")
    assert ws.data_to_send() == []
    assert not ws.is_open


def test_the_close_handshake_started_by_the_server() -> None:
    ws = opened()
    ws.close(1000, "bye")
    sent(ws)
    messages = ws.receive_data(masked(Opcode.CLOSE, close_payload(1000, "bye")))
    assert messages == [{"type": "websocket.disconnect", "code": 1000, "reason": "bye"}]
    assert ws.data_to_send() == [b""]  # the server then closes the TCP connection


def test_fail_sends_its_code() -> None:
    ws = opened()
    ws.fail(1011, "keepalive ping timeout")
    assert close_of(ws) == Close(1011, "keepalive ping timeout")


def test_close_expected_after_the_close_frames() -> None:
    ws = opened()
    assert not ws.close_expected()
    ws.close(1000)
    assert ws.close_expected()


# permessage-deflate ------------------------------------------------------------------


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


def test_a_header_value_websockets_refuses_is_a_400_not_an_exception() -> None:
    """Found by the fuzzer: a control character in a header value made websockets'
    Headers raise out of accept()."""
    ws = WebSocketProtocol()
    ws.receive_handshake("GET", b"/ws", "1.1", [*HANDSHAKE, (b"sec-websocket-key", b"\x00")])
    assert ws.accept(None, []) is None
    response, _eof = ws.data_to_send()
    assert response.startswith(b"HTTP/1.1 400 ") and ws.refusal.startswith("400 ")
