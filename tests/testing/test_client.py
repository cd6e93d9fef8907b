"""TestClient against small raw ASGI apps (no chanlite App involved)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chanlite.exceptions import WebSocketDisconnect
from chanlite.testing.client import (
    LifespanError,
    ResponseHeaders,
    TestClient,
    WebSocketRejected,
)
from chanlite.types import Message, Receive, Scope, Send

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    leftover.discard(asyncio.current_task())  # type: ignore[arg-type]
    assert not leftover, f"tasks left running: {leftover}"


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def respond(
    send: Send,
    body: bytes,
    status: int = 200,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers every HTTP request with what it saw, as JSON."""
    assert scope["type"] == "http"
    body = await read_body(receive)
    seen = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode(),
        "root_path": scope["root_path"],
        "query": scope["query_string"].decode(),
        "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
        "body": body.decode(),
        "scheme": scope["scheme"],
        "client": list(scope["client"]),
        "server": list(scope["server"]),
        "http_version": scope["http_version"],
        "state": scope.get("state"),
    }
    await respond(send, json.dumps(seen).encode(), headers=[(b"content-type", b"application/json")])


def header(seen: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in seen["headers"] if k == name]


# -- lifespan -----------------------------------------------------------------------------


def lifespan_app(events: list[str], *, fail_startup: str = "", fail_shutdown: str = "") -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            if fail_startup:
                await send({"type": "lifespan.startup.failed", "message": fail_startup})
                return
            scope["state"]["db"] = "connected"
            events.append("startup")
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            events.append("shutdown")
            if fail_shutdown:
                await send({"type": "lifespan.shutdown.failed", "message": fail_shutdown})
            else:
                await send({"type": "lifespan.shutdown.complete"})
            return
        await echo_app(scope, receive, send)

    return app


async def test_lifespan_runs_startup_and_shutdown_and_shares_state() -> None:
    events: list[str] = []
    client = TestClient(lifespan_app(events))
    async with client:
        assert events == ["startup"]
        assert client.lifespan_supported is True
        response = await client.get("/")
        assert response.json()["state"] == {"db": "connected"}
    assert events == ["startup", "shutdown"]


async def test_lifespan_startup_failure_raises_with_the_apps_message() -> None:
    with pytest.raises(LifespanError, match="lifespan startup failed: no database"):
        async with TestClient(lifespan_app([], fail_startup="no database")):
            pass


async def test_lifespan_shutdown_failure_raises_with_the_apps_message() -> None:
    with pytest.raises(LifespanError, match="lifespan shutdown failed: flush failed"):
        async with TestClient(lifespan_app([], fail_shutdown="flush failed")):
            pass


async def test_app_without_lifespan_support_is_tolerated() -> None:
    # Like Django's ASGIHandler: raises straight away on a scope it does not handle.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"cannot handle {scope['type']}")
        await echo_app(scope, receive, send)

    async with TestClient(app) as client:
        assert client.lifespan_supported is False
        response = await client.get("/")
        assert response.status_code == 200
        assert response.json()["state"] is None  # no lifespan ran: no state in the scope


async def test_exception_during_startup_propagates() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise ConnectionError("database unreachable")

    with pytest.raises(ConnectionError, match="database unreachable"):
        async with TestClient(app):
            pass


async def test_hung_startup_times_out_naming_the_wait() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError, match=r"lifespan: the app did not answer lifespan.startup"):
        async with TestClient(app, timeout=0.2):
            pass


async def test_hung_shutdown_times_out_naming_the_wait() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError, match=r"lifespan: the app did not answer lifespan.shutdown"):
        async with TestClient(app, timeout=0.2):
            pass


# -- HTTP requests ------------------------------------------------------------------------


async def test_request_scope_is_complete() -> None:
    client = TestClient(echo_app, client=("10.0.0.1", 1234), root_path="/api")
    seen = (await client.get("/a%20b/ü", params={"x": "1"})).json()
    assert seen["method"] == "GET"
    assert seen["path"] == "/api/a b/ü"
    assert seen["raw_path"] == "/a%20b/%C3%BC"
    assert seen["root_path"] == "/api"
    assert seen["query"] == "x=1"
    assert seen["scheme"] == "http"
    assert seen["client"] == ["10.0.0.1", 1234]
    assert seen["server"] == ["testserver", 80]
    assert seen["http_version"] == "1.1"
    assert header(seen, "host") == ["testserver"]
    assert header(seen, "user-agent") == ["testclient"]


async def test_https_base_url_and_absolute_urls() -> None:
    client = TestClient(echo_app, base_url="https://example.org:8443")
    seen = (await client.get("/")).json()
    assert (seen["scheme"], seen["server"]) == ("https", ["example.org", 8443])
    assert header(seen, "host") == ["example.org:8443"]
    seen = (await client.get("http://other.test/x?y=2")).json()
    assert (seen["scheme"], seen["path"], seen["query"]) == ("http", "/x", "y=2")
    assert header(seen, "host") == ["other.test"]


async def test_query_params_merge_with_the_path_query() -> None:
    client = TestClient(echo_app)
    seen = (await client.get("/q?a=1", params=[("b", "2"), ("b", "3 4")])).json()
    assert seen["query"] == "a=1&b=2&b=3+4"
    seen = (await client.get("/q", params={"tags": ["x", "y"], "n": 5})).json()
    assert seen["query"] == "tags=x&tags=y&n=5"


async def test_request_headers_override_defaults_and_keep_repeats() -> None:
    client = TestClient(echo_app, headers={"X-Team": "blue"})
    seen = (
        await client.get(
            "/", headers=[("User-Agent", "pytest"), ("X-Multi", "1"), ("x-multi", "2")]
        )
    ).json()
    assert header(seen, "user-agent") == ["pytest"]
    assert header(seen, "x-multi") == ["1", "2"]
    assert header(seen, "x-team") == ["blue"]


async def test_bodies_bytes_text_json_and_form() -> None:
    client = TestClient(echo_app)
    seen = (await client.post("/", content=b"\x00raw")).json()
    assert seen["body"] == "\x00raw"
    assert header(seen, "content-length") == ["4"]
    seen = (await client.put("/", content="héllo")).json()
    assert seen["body"] == "héllo"
    seen = (await client.patch("/", json={"a": [1, 2], "b": "é"})).json()
    assert json.loads(seen["body"]) == {"a": [1, 2], "b": "é"}
    assert header(seen, "content-type") == ["application/json"]
    seen = (await client.post("/", data={"name": "a b", "tag": ["x", "y"]})).json()
    assert seen["body"] == "name=a+b&tag=x&tag=y"
    assert header(seen, "content-type") == ["application/x-www-form-urlencoded"]
    seen = (await client.post("/")).json()
    assert header(seen, "content-length") == ["0"]
    seen = (await client.get("/")).json()
    assert header(seen, "content-length") == []


async def test_only_one_body_argument() -> None:
    with pytest.raises(TypeError, match="at most one of content=, json= and data="):
        await TestClient(echo_app).post("/", json={}, data={})


async def test_streaming_request_body_arrives_in_chunks() -> None:
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            messages.append(message)
            if not message["more_body"]:
                break
        await respond(send, b"ok")

    async def chunks() -> AsyncIterator[bytes]:
        yield b"one"
        yield b"two"

    response = await TestClient(app).post("/upload", content=chunks())
    assert response.text == "ok"
    assert [(m["body"], m["more_body"]) for m in messages] == [
        (b"one", True),
        (b"two", True),
        (b"", False),
    ]
    response = await TestClient(app).post("/upload", content=[b"a", b"b"])
    assert response.text == "ok"


async def test_response_status_headers_text_and_json() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"Content-Type", b"text/plain; charset=latin-1"),
            (b"x-dup", b"1"),
            (b"x-dup", b"2"),
        ]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": b"caf", "more_body": True})
        await send({"type": "http.response.body", "body": "é".encode("latin-1")})

    response = await TestClient(app).delete("/")
    assert response.status_code == 201
    assert response.reason_phrase == "Created"
    assert response.is_success
    assert response.headers["content-type"] == "text/plain; charset=latin-1"
    assert response.headers["CONTENT-TYPE"] == response.headers["content-type"]
    assert "X-Dup" in response.headers
    assert response.headers["x-dup"] == "1, 2"
    assert response.headers.get_list("x-dup") == ["1", "2"]
    assert list(response.headers) == ["content-type", "x-dup"]
    assert len(response.headers) == 2
    assert response.text == "café"
    assert repr(response) == "<TestResponse [201 Created]>"


async def test_json_response_and_head_without_body() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, b'{"ok": true}', headers=[(b"content-length", b"12")])

    client = TestClient(app)
    assert (await client.get("/")).json() == {"ok": True}
    response = await client.head("/")
    assert response.content == b""
    assert response.headers["content-length"] == "12"
    assert (await client.options("/")).status_code == 200


async def test_cookies_persist_and_expire() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        cookie = dict(scope["headers"]).get(b"cookie", b"").decode()
        headers = {
            "/login": [(b"set-cookie", b"session=abc; Path=/; HttpOnly"), (b"set-cookie", b"t=1")],
            "/logout": [(b"set-cookie", b"session=; Max-Age=0")],
            "/old": [(b"set-cookie", b"t=; Expires=Thu, 01 Jan 1970 00:00:00 GMT")],
        }.get(scope["path"], [])
        await respond(send, cookie.encode(), headers=headers)

    client = TestClient(app, cookies={"lang": "en"})
    assert (await client.get("/")).text == "lang=en"
    await client.post("/login")
    assert client.cookies == {"lang": "en", "session": "abc", "t": "1"}
    assert (await client.get("/")).text == "lang=en; session=abc; t=1"
    assert (await client.get("/", cookies={"extra": "x"})).text.endswith("; extra=x")
    assert "extra" not in client.cookies
    await client.get("/logout")
    await client.get("/old")
    assert client.cookies == {"lang": "en"}
    # An explicit Cookie header wins over the jar.
    assert (await client.get("/", headers={"cookie": "mine=1"})).text == "mine=1"


async def test_app_exception_propagates_or_gives_500() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await TestClient(app).get("/")
    response = await TestClient(app, raise_server_exceptions=False).get("/")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"


async def test_exception_after_the_response_still_propagates() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, b"done")
        raise RuntimeError("background job failed")

    with pytest.raises(RuntimeError, match="background job failed"):
        await TestClient(app).get("/")
    response = await TestClient(app, raise_server_exceptions=False).get("/")
    assert (response.status_code, response.text) == (200, "done")


async def test_work_after_the_response_finishes_before_request_returns() -> None:
    done: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, b"accepted", status=202)
        await asyncio.sleep(0.01)
        done.append("background")

    assert (await TestClient(app).get("/")).status_code == 202
    assert done == ["background"]


async def test_app_returning_without_response() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return

    with pytest.raises(RuntimeError, match="GET /nothing: the app returned without sending"):
        await TestClient(app).get("/nothing")
    assert (await TestClient(app, raise_server_exceptions=False).get("/")).status_code == 500


async def test_protocol_misuse_is_reported() -> None:
    async def body_first(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.body", "body": b"x"})

    async def str_headers(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [("a", "b")]})

    async def truncated(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})

    with pytest.raises(RuntimeError, match=r"http\.response\.body sent before"):
        await TestClient(body_first).get("/")
    with pytest.raises(TypeError, match="header names and values must be bytes"):
        await TestClient(str_headers).get("/")
    with pytest.raises(RuntimeError, match="returned before the end of the body"):
        await TestClient(truncated).get("/")


async def test_hung_app_times_out_naming_the_request() -> None:
    cancelled = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    client = TestClient(app, timeout=5)
    with pytest.raises(TimeoutError, match=r"GET /slow: the app sent no http.response.start"):
        await client.get("/slow", timeout=0.1)
    assert cancelled.is_set()


async def test_hung_body_times_out() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError, match="did not send the rest of the response body within"):
        await TestClient(app, timeout=0.1).get("/")


async def test_concurrent_requests() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(0.01)
        await respond(send, scope["path"].encode())

    client = TestClient(app)
    responses = await asyncio.gather(*(client.get(f"/{i}") for i in range(20)))
    assert [r.text for r in responses] == [f"/{i}" for i in range(20)]


# -- streaming responses (SSE) ---------------------------------------------------------------


def sse_app(gate: asyncio.Queue[str], seen: list[Message]) -> Any:
    """Sends one event per item the test puts on *gate*; records what receive() returns."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def listen() -> None:
            seen.append(await receive())

        listener = asyncio.create_task(listen())
        try:
            while not listener.done():
                waiter = asyncio.ensure_future(gate.get())
                await asyncio.wait({waiter, listener}, return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    waiter.cancel()
                    break
                data = waiter.result()
                chunk = f"event: tick\r\ndata: {data}\r\n\r\n".encode()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            listener.cancel()

    return app


async def test_sse_chunks_arrive_incrementally_and_exit_disconnects() -> None:
    gate: asyncio.Queue[str] = asyncio.Queue()
    seen: list[Message] = []
    client = TestClient(sse_app(gate, seen))
    async with client.stream("GET", "/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        lines = response.aiter_lines()
        gate.put_nowait("1")
        assert [await anext(lines) for _ in range(3)] == ["event: tick", "data: 1", ""]
        gate.put_nowait("2")  # sent only after the first event was read
        assert [await anext(lines) for _ in range(3)] == ["event: tick", "data: 2", ""]
    assert seen == [{"type": "http.disconnect"}]
    with pytest.raises(RuntimeError, match="has not been read"):
        _ = response.content


async def test_stream_aread_and_aiter_bytes_of_a_finished_response() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        for part in (b"a", b"", b"b"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"c"})

    client = TestClient(app)
    async with client.stream("GET", "/") as response:
        assert [chunk async for chunk in response.aiter_bytes()] == [b"a", b"b", b"c"]
        with pytest.raises(RuntimeError, match="already consumed"):
            await response.aread()
    async with client.stream("POST", "/", json={}) as response:
        assert await response.aread() == b"abc"
        assert response.text == "abc"
        assert [text async for text in response.aiter_text()] == ["abc"]


async def test_endless_stream_that_ignores_disconnect_is_stopped() -> None:
    errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        try:
            while True:  # never looks at receive(): send() must stop it
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
        except OSError as exc:
            errors.append(exc)
            raise

    async with TestClient(app).stream("GET", "/forever") as response:
        async for chunk in response.aiter_bytes():
            assert chunk == b"x"
            break
    assert len(errors) == 1
    assert "the client disconnected" in str(errors[0])


async def test_stream_app_that_ignores_disconnect_is_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chanlite.testing import client as client_module

    monkeypatch.setattr(client_module, "DISCONNECT_GRACE", 0.05)
    cancelled = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with TestClient(app).stream("GET", "/") as response:
        assert response.status_code == 200
    assert cancelled.is_set()


async def test_stream_app_error_is_raised_while_reading() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("generator failed")

    with pytest.raises(ValueError, match="generator failed"):
        async with TestClient(app).stream("GET", "/") as response:
            await response.aread()
    async with TestClient(app, raise_server_exceptions=False).stream("GET", "/") as response:
        assert await response.aread() == b"partial"


async def test_headers_mapping_is_case_insensitive() -> None:
    headers = ResponseHeaders([(b"A", b"1"), (b"b", b"2"), (b"a", b"3")])
    assert dict(headers) == {"a": "1, 3", "b": "2"}
    assert headers.get("missing") is None
    assert 1 not in headers
    assert "ResponseHeaders" in repr(headers)


# -- WebSockets -----------------------------------------------------------------------------


def ws_echo_app(record: list[Any]) -> Any:
    """Echoes text/bytes; 'close:<code>:<reason>' closes; 'crash' raises."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["ready"] = True
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert scope["type"] == "websocket"
        record.append(scope)
        assert (await receive())["type"] == "websocket.connect"
        offered = scope["subprotocols"]
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": offered[-1] if offered else None,
                "headers": [(b"x-accepted", b"yes")],
            }
        )
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                record.append(message)
                return
            text = message.get("text")
            if text == "crash":
                raise ZeroDivisionError("handler crashed")
            if text and text.startswith("close:"):
                _, code, reason = text.split(":")
                await send({"type": "websocket.close", "code": int(code), "reason": reason})
                record.append(await receive())
                return
            if text == "twice":
                await send({"type": "websocket.send", "text": "1"})
                await send({"type": "websocket.send", "text": "2"})
                continue
            await send({"type": "websocket.send", "text": text, "bytes": message.get("bytes")})

    return app


async def test_websocket_echo_and_client_close() -> None:
    record: list[Any] = []
    client = TestClient(ws_echo_app(record))
    async with client, client.websocket("/ws/chat?room=1", headers={"Origin": "http://x"}) as ws:
        await ws.send_text("hello")
        assert await ws.receive_text() == "hello"
        await ws.send_bytes(b"\x00\x01")
        assert await ws.receive_bytes() == b"\x00\x01"
        await ws.send_json({"n": 1})
        assert await ws.receive_json() == {"n": 1}
        await ws.send_json([1, "é"], binary=True)
        assert await ws.receive_json() == [1, "é"]
        await ws.send_text("raw")
        assert await ws.receive() == {"type": "websocket.send", "text": "raw", "bytes": None}
        await ws.close(4001, "bye")
        assert (ws.close_code, ws.close_reason) == (4001, "bye")
        with pytest.raises(WebSocketDisconnect):
            await ws.send_text("late")
    scope, disconnect = record
    assert disconnect == {"type": "websocket.disconnect", "code": 4001, "reason": "bye"}
    assert scope["path"] == "/ws/chat"
    assert scope["query_string"] == b"room=1"
    assert scope["scheme"] == "ws"
    assert scope["state"] == {"ready": True}


async def test_websocket_scope_is_complete() -> None:
    record: list[Any] = []
    client = TestClient(ws_echo_app(record), base_url="https://secure.test", root_path="/r")
    async with client.websocket("/a%2Fb", subprotocols=["v1", "v2"], cookies={"s": "1"}):
        pass
    scope = record[0]
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "wss"
    assert scope["path"] == "/r/a/b"
    assert scope["raw_path"] == b"/a%2Fb"
    assert scope["root_path"] == "/r"
    assert scope["query_string"] == b""
    assert scope["client"] == ("testclient", 50000)
    assert scope["server"] == ("secure.test", 443)
    assert scope["subprotocols"] == ["v1", "v2"]
    assert scope["extensions"] == {"websocket.http.response": {}, "chanlite.raise_exceptions": {}}
    assert "state" not in scope  # no lifespan ran
    headers = dict(scope["headers"])
    assert headers[b"host"] == b"secure.test"
    assert headers[b"upgrade"] == b"websocket"
    assert headers[b"connection"] == b"upgrade"
    assert headers[b"sec-websocket-version"] == b"13"
    assert len(headers[b"sec-websocket-key"]) == 24
    assert headers[b"sec-websocket-protocol"] == b"v1, v2"
    assert headers[b"cookie"] == b"s=1"


async def test_websocket_subprotocol_and_accept_headers() -> None:
    async with TestClient(ws_echo_app([])).websocket("/", subprotocols=["a", "b"]) as ws:
        assert ws.accepted_subprotocol == "b"
        assert ws.accept_headers["X-Accepted"] == "yes"
    async with TestClient(ws_echo_app([])).websocket("/") as ws:
        assert ws.accepted_subprotocol is None


async def test_websocket_unoffered_subprotocol_is_an_app_error() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "graphql"})

    with pytest.raises(ValueError, match="subprotocol 'graphql' not offered"):
        async with TestClient(app).websocket("/", subprotocols=["chat"]):
            pass


async def test_websocket_server_close_code_and_reason() -> None:
    record: list[Any] = []
    async with TestClient(ws_echo_app(record)).websocket("/") as ws:
        await ws.send_text("twice")
        await ws.send_text("close:4003:go away")
        # Messages sent before the close are still delivered, then the close is raised.
        assert await ws.receive_text() == "1"
        assert await ws.receive_text() == "2"
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
        assert (info.value.code, info.value.reason) == (4003, "go away")
        assert (ws.close_code, ws.close_reason) == (4003, "go away")
        with pytest.raises(WebSocketDisconnect):
            await ws.receive()
        with pytest.raises(WebSocketDisconnect):
            await ws.send_text("after close")
    # The app's receive() after its own close reports the close handshake.
    assert record[-1] == {"type": "websocket.disconnect", "code": 4003, "reason": "go away"}


async def test_websocket_raw_receive_returns_the_close_message() -> None:
    async with TestClient(ws_echo_app([])).websocket("/") as ws:
        await ws.send_text("close:1000:")
        assert await ws.receive() == {"type": "websocket.close", "code": 1000, "reason": ""}


async def test_websocket_rejected_with_403() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008, "reason": "no token"})
        assert (await receive())["type"] == "websocket.disconnect"

    with pytest.raises(WebSocketRejected) as info:
        async with TestClient(app).websocket("/private"):
            pass
    assert info.value.status_code == 403
    assert (info.value.code, info.value.reason) == (1008, "no token")
    assert isinstance(info.value, WebSocketDisconnect)
    assert "rejected with HTTP 403" in str(info.value)


async def test_websocket_denial_response() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert "websocket.http.response" in scope["extensions"]
        await receive()
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send(
            {"type": "websocket.http.response.body", "body": b'{"error":', "more_body": True}
        )
        await send({"type": "websocket.http.response.body", "body": b'"login"}'})

    with pytest.raises(WebSocketRejected) as info:
        async with TestClient(app).websocket("/"):
            pass
    rejected = info.value
    assert rejected.status_code == 401
    assert rejected.headers["www-authenticate"] == "Bearer"
    assert rejected.response.json() == {"error": "login"}
    assert rejected.text == '{"error":"login"}'
    assert rejected.content == b'{"error":"login"}'


async def test_websocket_app_exception_after_accept() -> None:
    async with TestClient(ws_echo_app([])).websocket("/") as ws:
        await ws.send_text("crash")
        with pytest.raises(ZeroDivisionError, match="handler crashed"):
            await ws.receive_text()
        assert ws.close_code == 1011
        with pytest.raises(WebSocketDisconnect):
            await ws.receive_text()

    client = TestClient(ws_echo_app([]), raise_server_exceptions=False)
    async with client.websocket("/") as ws:
        await ws.send_text("crash")
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
        assert info.value.code == 1011
        assert ws.close_code == 1011


async def test_websocket_app_exception_is_raised_on_exit_if_unread() -> None:
    with pytest.raises(ZeroDivisionError):
        async with TestClient(ws_echo_app([])).websocket("/") as ws:
            await ws.send_text("crash")


async def test_websocket_app_exception_before_accept() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise LookupError("no route")

    with pytest.raises(LookupError, match="no route"):
        async with TestClient(app).websocket("/"):
            pass
    with pytest.raises(WebSocketRejected) as info:
        async with TestClient(app, raise_server_exceptions=False).websocket("/"):
            pass
    assert info.value.status_code == 500


async def test_websocket_send_before_accept_is_an_app_error() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.send", "text": "too early"})

    with pytest.raises(RuntimeError, match=r"websocket\.send sent when the socket is connecting"):
        async with TestClient(app).websocket("/"):
            pass


async def test_websocket_app_returning_without_close_is_1006() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": b"last"})

    async with TestClient(app).websocket("/") as ws:
        assert await ws.receive_bytes() == b"last"
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_bytes()
        assert info.value.code == 1006


async def test_websocket_wrong_message_kind() -> None:
    async with TestClient(ws_echo_app([])).websocket("/") as ws:
        await ws.send_bytes(b"bin")
        with pytest.raises(TypeError, match="expected a text message, got bytes"):
            await ws.receive_text()
        await ws.send_text("txt")
        with pytest.raises(TypeError, match="expected a binary message, got text"):
            await ws.receive_bytes()


async def test_websocket_receive_timeout_names_the_path() -> None:
    async with TestClient(ws_echo_app([])).websocket("/quiet") as ws:
        with pytest.raises(TimeoutError, match=r"websocket /quiet: the app sent no message within"):
            await ws.receive_text(timeout=0.05)


async def test_websocket_handshake_timeout() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError, match="neither accepted nor rejected the handshake"):
        async with TestClient(app, timeout=0.1).websocket("/"):
            pass


async def test_websocket_app_ignoring_disconnect_is_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chanlite.testing import client as client_module

    monkeypatch.setattr(client_module, "DISCONNECT_GRACE", 0.05)
    cancelled = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with TestClient(app).websocket("/"):
        pass
    assert cancelled.is_set()


async def test_websocket_sending_after_client_close_stops_the_app() -> None:
    errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:  # a ticker that never reads: send() must stop it once closed
                await send({"type": "websocket.send", "text": "tick"})
                await asyncio.sleep(0)
        except OSError as exc:
            errors.append(exc)
            raise

    async with TestClient(app).websocket("/ticker") as ws:
        assert await ws.receive_text() == "tick"
    assert errors and "the client closed the connection" in str(errors[0])


async def test_websocket_requires_async_with() -> None:
    ws = TestClient(ws_echo_app([])).websocket("/")
    with pytest.raises(RuntimeError, match=r"async with client\.websocket"):
        await ws.send_text("x")


async def test_client_exit_cancels_connections_left_open() -> None:
    async with TestClient(ws_echo_app([])) as client:
        ws = client.websocket("/")
        await ws.__aenter__()  # never exited: the client cleans up
        await ws.send_text("hi")
        assert await ws.receive_text() == "hi"


async def test_endless_body_read_whole_times_out_with_a_hint() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        while True:
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            await asyncio.sleep(0)

    with pytest.raises(TimeoutError, match=r"did not end within 0.1s \(read endless responses"):
        await TestClient(app).get("/sse", timeout=0.1)


async def test_multipart_upload_parses_with_python_multipart() -> None:
    from python_multipart import parse_form

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        fields: dict[str, Any] = {}
        parse_form(
            {"Content-Type": headers["content-type"].encode()},
            __import__("io").BytesIO(body),
            lambda f: fields.__setitem__(f.field_name.decode(), f.value.decode()),
            lambda f: fields.__setitem__(
                f.field_name.decode(), (f.file_name.decode(), f.file_object.getvalue())
            ),
        )
        await respond(send, repr(sorted(fields.items())).encode())

    response = await TestClient(app).post(
        "/upload",
        data={"title": "notes"},
        files={"doc": ("a.txt", b"hello\r\n", "text/plain"), "raw": b"\x00\x01"},
    )
    assert response.text == repr(
        [("doc", ("a.txt", b"hello\r\n")), ("raw", ("raw", b"\x00\x01")), ("title", "notes")]
    )


async def test_redirects_are_followed_when_asked() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        if scope["path"] == "/old":
            await respond(send, b"", status=301, headers=[(b"location", b"/new?x=1")])
        elif scope["path"] == "/form":
            await respond(send, b"", status=303, headers=[(b"location", b"http://testserver/done")])
        elif scope["path"] == "/loop":
            await respond(send, b"", status=307, headers=[(b"location", b"/loop")])
        else:
            seen = f"{scope['method']} {scope['path']}?{scope['query_string'].decode()} {body!r}"
            await respond(send, seen.encode())

    client = TestClient(app)
    assert (await client.get("/old")).status_code == 301
    response = await client.get("/old", follow_redirects=True)
    assert response.text == "GET /new?x=1 b''"
    assert [r.status_code for r in response.history] == [301]
    follower = TestClient(app, follow_redirects=True)
    assert (await follower.post("/form", data={"a": "1"})).text == "GET /done? b''"
    with pytest.raises(RuntimeError, match="more than 20 redirects"):
        await follower.get("/loop")


async def test_lifespan_app_returning_at_once_is_unsupported_but_mid_startup_is_an_error() -> None:
    async def returns(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await respond(send, b"ok")

    async with TestClient(returns) as client:
        assert client.lifespan_supported is False
        assert (await client.get("/")).text == "ok"

    async def gives_up(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    with pytest.raises(LifespanError, match=r"returned without lifespan\.startup\.complete"):
        async with TestClient(gives_up):
            pass


async def test_each_request_gets_a_shallow_copy_of_the_lifespan_state() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["counter"] = [0]
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        scope["state"]["mine"] = True  # must not leak into the next request
        scope["state"]["counter"][0] += 1  # the objects themselves are shared
        await respond(send, json.dumps(sorted(scope["state"])).encode())

    async with TestClient(app) as client:
        assert (await client.get("/")).json() == ["counter", "mine"]
        await client.get("/")
        assert client._state == {"counter": [2]}


async def test_server_exceptions_are_logged_when_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyError("logged")

    response = await TestClient(app, raise_server_exceptions=False).get("/x")
    assert response.status_code == 500
    assert "Exception in ASGI application (GET /x)" in caplog.text
    assert "KeyError: 'logged'" in caplog.text


async def test_websocket_session_cannot_be_entered_twice() -> None:
    ws = TestClient(ws_echo_app([])).websocket("/")
    async with ws:
        pass
    with pytest.raises(RuntimeError, match="already opened"):
        await ws.__aenter__()
