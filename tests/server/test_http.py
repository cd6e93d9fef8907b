"""HTTP/1.1 over real sockets: framing, keep-alive, pipelining, limits, smuggling."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from chanlite.server import Server
from chanlite.server.state import listener_address
from chanlite.types import Message, Receive, Scope, Send
from tests.server.conftest import RawClient, running

pytestmark = pytest.mark.timeout(20)


async def test_get_with_date_and_server_headers(echo_server: Server) -> None:
    client = await RawClient.connect(echo_server.bound_port or 0)
    await client.send(b"GET /a%20b?x=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    response = await client.read_response()
    assert response.status == 200
    assert response.text == "GET /a b x=1\n"
    assert response.headers[b"server"] == b"chanlite"
    assert response.headers[b"date"].endswith(b" GMT")
    assert response.headers[b"content-length"] == b"13"
    await client.close()


async def test_keep_alive_and_pipelining(echo_server: Server) -> None:
    client = await RawClient.connect(echo_server.bound_port or 0)
    await client.send(
        b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /3 HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    texts = [(await client.read_response()).text for _ in range(3)]
    assert texts == ["GET /1 \n", "POST /2 \nabc", "GET /3 \n"]
    # The same connection still serves.
    await client.send(b"GET /4 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await client.read_response()).text == "GET /4 \n"
    await client.close()


async def test_connection_close_and_http10(echo_server: Server) -> None:
    client = await RawClient.connect(echo_server.bound_port or 0)
    await client.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    response = await client.read_response()
    assert response.headers[b"connection"] == b"close"
    assert await client.wait_closed() == b""
    client = await RawClient.connect(echo_server.bound_port or 0)
    await client.send(b"GET / HTTP/1.0\r\n\r\n")
    raw = await client.wait_closed()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_chunked_request_body(echo_server: Server) -> None:
    client = await RawClient.connect(echo_server.bound_port or 0)
    await client.send(
        b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"
    )
    assert (await client.read_response()).text == "POST /c \nabcdefgh"
    await client.close()


async def streaming_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for part in (b"one ", b"two ", b"three"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def test_chunked_response_and_head() -> None:
    async with running(streaming_app, lifespan="off") as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        response = await client.read_response()
        assert response.headers[b"transfer-encoding"] == b"chunked"
        assert response.body == b"one two three"
        client.head_request = True
        await client.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await client.read_response()
        assert head.status == 200 and head.body == b""
        # Nothing else arrives; the connection still serves.
        client.head_request = False
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await client.read_response()).body == b"one two three"
        await client.close()


async def test_head_keeps_content_length(echo_server: Server) -> None:
    client = await RawClient.connect(echo_server.bound_port or 0)
    client.head_request = True
    await client.send(b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n")
    response = await client.read_response()
    assert response.headers[b"content-length"] == b"9"  # "HEAD /x \n"
    assert response.body == b""
    await client.close()


async def test_expect_100_continue(echo_server: Server) -> None:
    client = await RawClient.connect(echo_server.bound_port or 0)
    await client.send(
        b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await client.read_raw()
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    await client.send(b"hello")
    assert (await client.read_response()).text == "POST /e \nhello"
    await client.close()


async def test_http_disconnect_reaches_app() -> None:
    seen: asyncio.Queue[Message] = asyncio.Queue()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()  # the (empty) body
        await seen.put(await receive())  # blocks until the client goes away

    async with running(app, lifespan="off") as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.sleep(0.05)
        await client.close()
        message = await asyncio.wait_for(seen.get(), 5)
        assert message == {"type": "http.disconnect"}


async def test_app_exception_gives_500_and_server_survives() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/boom":
            raise ValueError("boom")
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body"})

    async with running(app, lifespan="off") as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await client.read_response()).status == 500
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        response = await client.read_response()
        assert response.status == 204 and b"content-length" not in response.headers
        await client.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(101)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 200000, 431),  # never finishes
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
    ],
    ids=[
        "uri-too-long",
        "too-many-headers",
        "headers-too-large",
        "endless-header",
        "garbage",
        "cl-and-te",
        "conflicting-cl",
        "duplicate-cl",
        "bad-chunk",
        "te-not-chunked",
        "negative-cl",
    ],
)
async def test_malformed_requests_rejected(
    echo_server: Server, request_bytes: bytes, status: int
) -> None:
    client = await RawClient.connect(echo_server.bound_port or 0)
    await client.send(request_bytes)
    raw = await client.wait_closed()
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:80]
    # Other connections are undisturbed.
    other = await RawClient.connect(echo_server.bound_port or 0)
    await other.send(b"GET /fine HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await other.read_response()).status == 200
    await other.close()


async def test_bad_request_after_good_pipelined_one(echo_server: Server) -> None:
    client = await RawClient.connect(echo_server.bound_port or 0)
    await client.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\nBROKEN\r\n\r\n")
    raw = await client.wait_closed()
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert b"HTTP/1.1 400 " in raw


async def test_large_body_streams_in_pieces() -> None:
    sizes: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            sizes.append(len(message["body"]))
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(sum(sizes)).encode()})

    async with running(app, lifespan="off") as server:
        client = await RawClient.connect(server.bound_port or 0)
        total = 3 * 1024 * 1024
        await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % total)
        chunk = b"x" * 65536
        for _ in range(total // len(chunk)):
            await client.send(chunk)
        response = await client.read_response()
        assert response.body == str(total).encode()
        assert len(sizes) > 1
        await client.close()


async def test_root_path_and_scope_basics() -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with running(app, lifespan="off", root_path="/api") as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"GET /items?q=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        await client.read_response()
        await client.close()
    scope = scopes[0]
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/items"
    assert scope["raw_path"] == b"/items"
    assert scope["query_string"] == b"q=1"
    assert scope["scheme"] == "http"
    assert scope["http_version"] == "1.1"
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ("127.0.0.1", server.bound_port)
    assert (b"host", b"t") in scope["headers"]


async def test_scope_server_is_the_local_address_the_connection_arrived_on() -> None:
    # A wildcard bind looks the address up per connection; a specific one knows it.
    servers: list[object] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        servers.append(scope["server"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    for host in ("0.0.0.0", "127.0.0.1"):
        async with running(app, lifespan="off", host=host) as server:
            client = await RawClient.connect(server.bound_port or 0)
            await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert (await client.read_response()).status == 204
            await client.close()
        assert servers.pop() == ("127.0.0.1", server.bound_port)


def test_listener_address_is_known_only_for_a_specific_bind(tmp_path: Path) -> None:
    with socket.socket() as wildcard, socket.socket() as loopback:
        wildcard.bind(("0.0.0.0", 0))
        loopback.bind(("127.0.0.1", 0))
        assert listener_address(wildcard) is None
        assert listener_address(loopback) == ("127.0.0.1", loopback.getsockname()[1])
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(tmp_path / "s.sock"))
        assert listener_address(unix) == (str(tmp_path / "s.sock"), None)
    if socket.has_ipv6:
        with socket.socket(socket.AF_INET6) as any6:
            any6.bind(("::", 0))
            assert listener_address(any6) is None


async def test_streaming_response_sends_headers_before_the_first_chunk() -> None:
    go = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await go.wait()  # e.g. an SSE stream waiting for its first event
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": False})

    async with running(app, lifespan="off") as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await client.read_raw(timeout=2)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in head
        go.set()
        assert await client.read_raw(timeout=2) == b"9\r\ndata: 1\n\n\r\n0\r\n\r\n"
        await client.close()


async def test_response_without_reading_a_large_body_closes_cleanly() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b"too big"})

    async with running(app, lifespan="off") as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n")
        await client.send(b"x" * 100000)
        response = await client.read_response()
        assert response.status == 413 and response.headers[b"connection"] == b"close"
        await client.wait_closed()
        other = await RawClient.connect(server.bound_port or 0)
        await other.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok")
        response = await other.read_response()
        assert response.status == 413 and b"connection" not in response.headers
        await other.close()


async def test_http10_keep_alive_when_asked(echo_server: Server) -> None:
    client = await RawClient.connect(echo_server.bound_port or 0)
    for path in (b"/a", b"/b"):
        await client.send(b"GET " + path + b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        response = await client.read_response()
        assert response.headers[b"connection"] == b"keep-alive"
        assert response.text == f"GET {path.decode()} \n"
    await client.close()


async def test_app_content_length_is_sent_once() -> None:
    # An app that sets Content-Length itself (as every chanlite Response does) must not
    # get a second copy from the server: strict clients (wrk, proxies) reject duplicates.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
            }
        )
        await send({"type": "http.response.body", "body": b"hello"})

    async with running(app, lifespan="off") as server:
        client = await RawClient.connect(server.bound_port or 0)
        for _ in range(2):  # and keep-alive still works after it
            await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            response = await client.read_response()
            lengths = [v for n, v in response.raw_headers if n == b"content-length"]
            assert lengths == [b"5"]
            assert response.body == b"hello"
        await client.close()
