"""HTTP/1.1 as a protocol, fed literal bytes: :class:`RequestParser` and
:class:`ResponseFramer` without a socket or a loop."""

from __future__ import annotations

import pytest

from chanlite.server.http import (
    BadRequest,
    Body,
    MessageEnd,
    RequestHead,
    RequestParser,
    ResponseError,
    ResponseFramer,
    Upgrade,
    default_headers,
    simple_response,
    status_line,
)

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)

CL = b"Content-Length: "
TE = b"Transfer-Encoding: "


def feed(data: bytes, parser: RequestParser | None = None) -> list[object]:
    return (parser or RequestParser()).feed(data)


def bytewise(data: bytes, parser: RequestParser | None = None) -> list[object]:
    parser = parser or RequestParser()
    events: list[object] = []
    for i in range(len(data)):
        events.extend(parser.feed(data[i : i + 1]))
    return events


def only_head(events: list[object]) -> RequestHead:
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert len(heads) == 1, events
    return heads[0]


def bad(events: list[object]) -> BadRequest:
    assert events and isinstance(events[-1], BadRequest), events
    return events[-1]


def body_of(events: list[object]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Body))


# requests ----------------------------------------------------------------------------


def test_a_simple_get() -> None:
    events = feed(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    head = only_head(events)
    assert (head.method, head.path, head.raw_path, head.query) == ("GET", "/", b"/", b"")
    assert head.http_version == "1.1" and head.keep_alive and not head.websocket
    assert head.headers == [(b"host", b"t")]
    assert isinstance(events[-1], MessageEnd)


def test_http_10_closes_unless_asked_to_keep_alive() -> None:
    assert not only_head(feed(b"GET / HTTP/1.0\r\n\r\n")).keep_alive
    assert only_head(feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")).keep_alive


def test_connection_close_on_http_11() -> None:
    assert not only_head(feed(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")).keep_alive


def test_content_length_body() -> None:
    events = feed(b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
    assert [type(e).__name__ for e in events] == ["RequestHead", "Body", "MessageEnd"]
    assert body_of(events) == b"hello"


def test_a_body_in_pieces_ends_once() -> None:
    parser = RequestParser()
    first = parser.feed(b"POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\nabc")
    assert body_of(first) == b"abc" and not any(isinstance(e, MessageEnd) for e in first)
    second = parser.feed(b"def")
    assert body_of(second) == b"def" and isinstance(second[-1], MessageEnd)


def test_chunked_body_with_extensions_and_trailers() -> None:
    events = feed(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;name=value\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    assert body_of(events) == b"abcde" and isinstance(events[-1], MessageEnd)


def test_chunked_byte_by_byte_is_the_same_body() -> None:
    data = (
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n"
    )
    events = bytewise(data)
    assert body_of(events) == b"wikipedia"
    assert sum(isinstance(e, MessageEnd) for e in events) == 1


def test_pipelined_requests_come_out_in_order() -> None:
    events = feed(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n")
    assert [e.path for e in events if isinstance(e, RequestHead)] == ["/a", "/b", "/c"]
    assert sum(isinstance(e, MessageEnd) for e in events) == 3


def test_path_is_percent_decoded_and_raw_path_is_not() -> None:
    head = only_head(feed(b"GET /a%20b/%C3%A5?x=%20 HTTP/1.1\r\n\r\n"))
    assert head.path == "/a b/\u00e5" and head.raw_path == b"/a%20b/%C3%A5"
    assert head.query == b"x=%20"


def test_asterisk_form() -> None:
    head = only_head(feed(b"OPTIONS * HTTP/1.1\r\n\r\n"))
    assert (head.method, head.raw_path, head.query) == ("OPTIONS", b"*", b"")


def test_absolute_form_target() -> None:
    head = only_head(feed(b"GET http://example.com/p?q=1 HTTP/1.1\r\n\r\n"))
    assert (head.path, head.query, head.target) == ("/p", b"q=1", b"http://example.com/p?q=1")


def test_header_names_are_lower_case_and_values_kept() -> None:
    head = only_head(feed(b"GET / HTTP/1.1\r\nX-Custom-Thing: MiXeD\r\nHOST: h\r\n\r\n"))
    assert head.headers == [(b"x-custom-thing", b"MiXeD"), (b"host", b"h")]


def test_common_header_names_are_shared_objects() -> None:
    one = only_head(feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")).headers[0][0]
    two = only_head(feed(b"GET / HTTP/1.1\r\nhost: b\r\n\r\n")).headers[0][0]
    assert one is two


def test_expect_100_continue() -> None:
    data = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    assert only_head(feed(data)).expect_continue


POST = b"POST / HTTP/1.1\r\n"
REFUSED = {
    "dup-cl": (POST + CL + b"1\r\n" + CL + b"1\r\n\r\nx", "Duplicate Content-Length"),
    "cl-and-te": (POST + CL + b"3\r\n" + TE + b"chunked\r\n\r\n", "Transfer-Encoding"),
    "te-gzip": (POST + TE + b"gzip\r\n\r\n", "Unsupported Transfer-Encoding"),
    "dup-te": (POST + TE + b"chunked\r\n" + TE + b"chunked\r\n\r\n", "Transfer-Encoding"),
    "space-in-name": (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", "Invalid HTTP request"),
    "garbage": (b"NOT-HTTP\r\n\r\n", "Invalid HTTP request"),
    "bad-chunk": (POST + TE + b"chunked\r\n\r\nzz\r\n", "Invalid HTTP request"),
    "nul": (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", "Invalid HTTP request"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSED))
def test_smuggling_and_malformed_requests_are_refused(case: str) -> None:
    request_bytes, reason = REFUSED[case]
    refusal = bad(feed(request_bytes))
    assert refusal.status == 400 and reason in refusal.reason


def test_request_line_limit_is_414() -> None:
    parser = RequestParser(limit_line=10)
    assert bad(parser.feed(b"GET /0123456789 HTTP/1.1\r\n\r\n")).status == 414


def test_header_count_limit_is_431() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(4)) + b"\r\n"
    refusal = bad(RequestParser(limit_fields=3).feed(data))
    assert (refusal.status, refusal.reason) == (431, "Too many request header fields")


def test_header_size_limit_is_431() -> None:
    data = b"GET / HTTP/1.1\r\nX: " + b"a" * 200 + b"\r\n\r\n"
    assert bad(RequestParser(limit_header_size=100).feed(data)).status == 431


def test_an_unfinished_header_line_is_bounded_too() -> None:
    parser = RequestParser(limit_line=50, limit_header_size=100)
    assert parser.feed(b"GET / HTTP/1.1\r\nX: ") == []
    assert parser.mid_request
    events: list[object] = []
    for _ in range(10):
        events.extend(parser.feed(b"a" * 20))  # never a line end
    assert bad(events).status == 431


def test_the_parser_is_finished_after_a_refusal() -> None:
    parser = RequestParser()
    bad(parser.feed(b"garbage\r\n\r\n"))
    assert parser.done and parser.feed(b"GET / HTTP/1.1\r\n\r\n") == []


def test_mid_request_only_while_the_head_arrives() -> None:
    parser = RequestParser()
    assert not parser.mid_request
    parser.feed(b"GET / HTTP/1.1\r\nHo")
    assert parser.mid_request
    parser.feed(b"st: t\r\n\r\n")
    assert not parser.mid_request


def test_websocket_upgrade_keeps_the_bytes_after_the_head() -> None:
    (event,) = feed(UPGRADE + b"\r\n\x81\x80abcd")
    assert isinstance(event, Upgrade) and event.head.websocket
    assert event.trailing == b"\x81\x80abcd"
    assert not event.head.keep_alive


def test_websocket_upgrade_byte_by_byte() -> None:
    events = bytewise(UPGRADE + b"\r\n")
    assert len(events) == 1 and isinstance(events[0], Upgrade)
    assert events[0].head.path == "/ws"


def test_an_upgrade_to_something_else_is_plain_http() -> None:
    events = feed(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
    assert not any(isinstance(e, Upgrade) for e in events)
    assert not only_head(events).websocket


def test_a_post_asking_for_websocket_is_not_a_websocket() -> None:
    data = b"POST / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    events = feed(data)
    assert not any(isinstance(e, Upgrade) for e in events)


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\n\r\nhello",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_a_websocket_upgrade_with_a_body_is_refused(framing: bytes) -> None:
    refusal = bad(feed(UPGRADE + framing))
    assert (refusal.status, refusal.reason) == (400, "WebSocket upgrade request with a body")


def test_a_websocket_upgrade_with_an_empty_body_is_fine() -> None:
    (event,) = feed(UPGRADE + b"Content-Length: 0\r\n\r\n")
    assert isinstance(event, Upgrade)


# responses ---------------------------------------------------------------------------


def test_framer_single_message_gets_content_length() -> None:
    framer = ResponseFramer(head_request=False, keep_alive=True)
    head = framer.head(200, [(b"x", b"1")], b"", 5, True)
    assert head == b"HTTP/1.1 200 OK\r\nx: 1\r\ncontent-length: 5\r\n\r\n"
    assert framer.body(b"hello", False) == b"hello" and framer.complete and framer.keep_alive


def test_framer_streaming_is_chunked() -> None:
    framer = ResponseFramer(head_request=False, keep_alive=True)
    assert b"transfer-encoding: chunked\r\n" in framer.head(200, [], b"", None, True)
    assert framer.body(b"abc", True) == b"3\r\nabc\r\n"
    assert framer.body(b"", True) == b""
    assert framer.body(b"z", False) == b"1\r\nz\r\n0\r\n\r\n"


def test_framer_http_10_stream_closes_the_connection() -> None:
    framer = ResponseFramer(head_request=False, keep_alive=True)
    head = framer.head(200, [], b"", None, False)
    assert b"connection: close\r\n" in head and not framer.keep_alive and not framer.chunked


def test_framer_http_10_keep_alive_is_said_out_loud() -> None:
    framer = ResponseFramer(head_request=False, keep_alive=True)
    assert b"connection: keep-alive\r\n" in framer.head(200, [], b"", 0, False)


def test_framer_head_request_sends_no_body() -> None:
    framer = ResponseFramer(head_request=True, keep_alive=True)
    head = framer.head(200, [(b"content-length", b"42")], b"", None, True)
    assert b"content-length: 42\r\n" in head
    assert framer.body(b"ignored", False) == b""


@pytest.mark.parametrize("status", [204, 304, 101])
def test_framer_statuses_without_a_body(status: int) -> None:
    framer = ResponseFramer(head_request=False, keep_alive=True)
    head = framer.head(status, [], b"", 0, True)
    assert b"content-length" not in head and b"transfer-encoding" not in head
    assert framer.body(b"", False) == b""


def test_framer_the_apps_content_length_is_checked() -> None:
    long = ResponseFramer(False, True)
    long.head(200, [(b"content-length", b"2")], b"", None, True)
    with pytest.raises(ResponseError, match="longer"):
        long.body(b"abc", False)
    short = ResponseFramer(False, True)
    short.head(200, [(b"content-length", b"10")], b"", None, True)
    with pytest.raises(ResponseError, match="shorter"):
        short.body(b"abc", False)
    broken = ResponseFramer(False, True)
    with pytest.raises(ResponseError, match="invalid Content-Length"):
        broken.head(200, [(b"content-length", b"ten")], b"", None, True)


@pytest.mark.parametrize(
    "header",
    [(b"x", b"a\r\nInjected: 1"), (b"bad name", b"v"), (b"x", b"nul\x00"), ("str", b"v")],
    ids=["crlf", "space", "nul", "not-bytes"],
)
def test_framer_refuses_unsafe_headers(header: tuple[object, object]) -> None:
    with pytest.raises(ResponseError):
        ResponseFramer(False, True).head(200, [header], b"", 0, True)  # type: ignore[list-item]


def test_framer_connection_close_from_the_app() -> None:
    framer = ResponseFramer(False, True)
    head = framer.head(200, [(b"Connection", b"close")], b"", 0, True)
    assert head.count(b"onnection: close") == 1 and not framer.keep_alive


def test_framer_drops_the_apps_transfer_encoding() -> None:
    framer = ResponseFramer(False, True)
    head = framer.head(200, [(b"transfer-encoding", b"chunked")], b"", 3, True)
    assert b"transfer-encoding" not in head and b"content-length: 3\r\n" in head


def test_framer_refuses_a_body_after_the_end() -> None:
    framer = ResponseFramer(False, True)
    framer.head(200, [], b"", 0, True)
    framer.body(b"", False)
    with pytest.raises(ResponseError, match="already complete"):
        framer.body(b"more", False)


def test_status_lines_and_default_headers() -> None:
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"
    assert status_line(599) == b"HTTP/1.1 599 \r\n"
    assert default_headers(b"D", True) == b"date: D\r\nserver: chanlite\r\n"
    assert default_headers(None, False) == b""


def test_simple_response_is_complete_and_closes() -> None:
    data = simple_response(503, "Service Unavailable", b"")
    (head, body) = data.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"content-length: 19" in head and b"connection: close" in head
    assert body == b"Service Unavailable"


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
