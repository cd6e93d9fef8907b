"""WebSockets over real sockets: the websockets client library, and raw bytes for bad peers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from chanlite.server import Server
from chanlite.server.ws_connection import WebSocketConnection
from chanlite.types import Message, Receive, Scope, Send
from tests.server.conftest import echo_app, running

pytestmark = pytest.mark.timeout(20)


def url(server: Server, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{server.bound_port}{path}"


class RawWebSocket:
    """A client speaking frames by hand, to misbehave on purpose."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN, max_size=None)
        self.frames: list[Frame] = []

    @classmethod
    async def connect(cls, port: int, extra: bytes = b"") -> tuple[RawWebSocket, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + extra
            + b"\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return cls(reader, writer), head

    def send(self, opcode: Opcode, data: bytes, fin: bool = True) -> None:
        self.writer.write(Frame(opcode, data, fin).serialize(mask=True, extensions=[]))

    async def next_frame(self, timeout: float = 5.0) -> Frame | None:
        """The next frame from the server, or None at EOF."""
        async with asyncio.timeout(timeout):
            while not self.frames:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.parser.receive_data(data)
                self.frames.extend(e for e in self.parser.events_received() if isinstance(e, Frame))
        return self.frames.pop(0)

    async def close_frame(self) -> Close:
        while True:
            frame = await self.next_frame()
            assert frame is not None, "connection closed without a close frame"
            if frame.opcode is Opcode.CLOSE:
                return Close.parse(frame.data)

    async def eof(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while await self.reader.read(65536):
                pass


async def test_echo_with_compression(echo_server: Server) -> None:
    async with connect(url(echo_server)) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in extensions
        assert "server_max_window_bits=12" in extensions
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01" * 50000)
        assert await ws.recv() == b"\x00\x01" * 50000
        # A fragmented message is reassembled.
        await ws.send(["frag", "ment", "ed"])
        assert await ws.recv() == "fragmented"


async def test_compression_can_be_switched_off() -> None:
    async with running(echo_app, ws_per_message_deflate=False) as server:
        async with connect(url(server)) as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send("plain")
            assert await ws.recv() == "plain"


async def test_subprotocol_headers_and_scope() -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        scopes.append(scope)
        assert (await receive())["type"] == "websocket.connect"
        await send(
            {"type": "websocket.accept", "subprotocol": "chat.v2", "headers": [(b"x-hi", b"1")]}
        )
        await send({"type": "websocket.send", "text": "ok"})
        await receive()

    async with running(app, lifespan="off") as server:
        offered: Any = ["chat.v1", "chat.v2"]
        async with connect(url(server, "/ws?room=1"), subprotocols=offered) as ws:
            assert ws.subprotocol == "chat.v2"
            assert ws.response.headers["x-hi"] == "1"
            assert await ws.recv() == "ok"
    scope = scopes[0]
    assert scope["subprotocols"] == ["chat.v1", "chat.v2"]
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/ws"
    assert scope["query_string"] == b"room=1"
    assert "websocket.http.response" in scope["extensions"]
    assert callable(scope["extensions"]["chanlite.frames"]["send_frame"])


async def test_close_codes_both_ways() -> None:
    events: asyncio.Queue[Message] = asyncio.Queue()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        if message.get("text") == "close me":
            await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
        else:
            await events.put(message)
            return
        await events.put(await receive())

    async with running(app, lifespan="off") as server:
        async with connect(url(server)) as ws:
            await ws.close(4002, "client done")
        assert await asyncio.wait_for(events.get(), 5) == {
            "type": "websocket.disconnect",
            "code": 4002,
            "reason": "client done",
        }
        async with connect(url(server)) as ws:
            await ws.send("close me")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "bye")
        message = await asyncio.wait_for(events.get(), 5)
        assert message["code"] == 4001


async def test_invalid_utf8_closes_1007_fast(echo_server: Server) -> None:
    ws, head = await RawWebSocket.connect(echo_server.bound_port or 0)
    assert head.startswith(b"HTTP/1.1 101")
    # The first fragment is already invalid: fail now, before the message ends.
    ws.send(Opcode.TEXT, b"ok \xc3\x28", fin=False)
    close = await ws.close_frame()
    assert close.code == 1007
    await ws.eof()


async def test_max_size_closes_1009() -> None:
    async with running(echo_app, ws_max_size=1000) as server:
        async with connect(url(server), compression=None) as ws:
            await ws.send("x" * 1000)
            assert await ws.recv() == "x" * 1000
            await ws.send("x" * 1001)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_protocol_error_closes_1002(echo_server: Server) -> None:
    ws, _ = await RawWebSocket.connect(echo_server.bound_port or 0)
    ws.send(Opcode.CONT, b"no message to continue")
    assert (await ws.close_frame()).code == 1002
    await ws.eof()


async def test_keepalive_ping_timeout_closes_1011() -> None:
    async with running(echo_app, ws_ping_interval=0.1, ws_ping_timeout=0.2) as server:
        ws, _ = await RawWebSocket.connect(server.bound_port or 0)
        frame = await ws.next_frame()
        assert frame is not None and frame.opcode is Opcode.PING
        # Never answer it.
        assert (await ws.close_frame()).code == 1011
        await ws.eof()
        # A client that answers pings stays connected.
        async with connect(url(server)) as good:
            await asyncio.sleep(0.6)
            await good.send("still here")
            assert await good.recv() == "still here"


async def test_close_timeout_drops_silent_peer() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        await receive()

    async with running(app, lifespan="off", ws_close_timeout=0.3) as server:
        ws, _ = await RawWebSocket.connect(server.bound_port or 0)
        assert (await ws.close_frame()).code == 1000
        # The client never answers the close: the server drops it after the timeout.
        await ws.eof(timeout=3)


async def test_denial_response_and_reject() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        if scope["path"] == "/deny":
            headers = [(b"content-type", b"text/plain")]
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": b"who are you"})
        else:
            await send({"type": "websocket.close"})

    async with running(app, lifespan="off") as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url(server, "/deny")):
                pass
        assert info.value.response.status_code == 401
        assert info.value.response.body == b"who are you"
        with pytest.raises(InvalidStatus) as info:
            async with connect(url(server, "/close")):
                pass
        assert info.value.response.status_code == 403


async def test_bad_handshake_gets_400(echo_server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server.bound_port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"  # no Sec-WebSocket-Key
    )
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 400")
    writer.close()


async def test_plain_handshake_response_from_the_template() -> None:
    """No extension and no subprotocol: the 101 carries exactly the RFC 6455 headers, the
    server's Date and the app's own headers, and the connection works."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept", "headers": [(b"x-room", b"7")]})
        message = await receive()
        await send({"type": "websocket.send", "text": message.get("text")})
        await receive()

    async with running(app, lifespan="off") as server:
        ws, head = await RawWebSocket.connect(server.bound_port or 0)
        lines = head.decode().split("\r\n")
        assert lines[0] == "HTTP/1.1 101 Switching Protocols"
        fields = dict(line.split(": ", 1) for line in lines[1:] if line)
        # The RFC 6455 example key and its accept value.
        assert fields.pop("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert fields.pop("Date").endswith(" GMT")
        assert fields == {"Upgrade": "websocket", "Connection": "Upgrade", "x-room": "7"}
        ws.send(Opcode.TEXT, b"hi")
        frame = await ws.next_frame()
        assert frame is not None and frame.data == b"hi"
        ws.writer.close()


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        # Not base64 of 16 bytes.
        (b"Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n", b"400"),
        (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n", b"400"),
        # Two keys.
        (
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            b"400",
        ),
    ],
)
async def test_invalid_handshakes_get_websockets_answers(
    echo_server: Server, request_head: bytes, status: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server.bound_port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + request_head
        + b"\r\n"
    )
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 " + status), data
    writer.close()


async def test_client_eof_without_close_is_1006() -> None:
    events: asyncio.Queue[Message] = asyncio.Queue()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await events.put(await receive())

    async with running(app, lifespan="off") as server:
        ws, _ = await RawWebSocket.connect(server.bound_port or 0)
        ws.writer.close()
        message = await asyncio.wait_for(events.get(), 5)
        assert message["type"] == "websocket.disconnect" and message["code"] == 1006


def text_frame(text: str) -> bytes:
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])


async def test_send_frame_fast_path() -> None:
    results: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        send_frame = scope["extensions"]["chanlite.frames"]["send_frame"]
        await receive()
        results["before_accept"] = send_frame(text_frame("too early"))
        await send({"type": "websocket.accept"})
        # Interleave pre-encoded (uncompressed) frames with normal, compressed sends.
        results["open"] = send_frame(text_frame("fast 1"))
        await send({"type": "websocket.send", "text": "slow " * 100})
        send_frame(text_frame("fast 2"))
        await send({"type": "websocket.send", "bytes": b"slow bytes" * 100})
        send_frame(Frame(Opcode.BINARY, b"\x00fast").serialize(mask=False, extensions=[]))
        message = await receive()
        assert message["type"] == "websocket.receive"
        await send({"type": "websocket.close", "code": 1000})
        results["closing"] = send_frame(text_frame("too late"))
        await receive()

    async with running(app, lifespan="off") as server:
        async with connect(url(server)) as ws:
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            received = [await ws.recv() for _ in range(5)]
            await ws.send("done")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
    assert received == ["fast 1", "slow " * 100, "fast 2", b"slow bytes" * 100, b"\x00fast"]
    assert results == {"before_accept": False, "open": True, "closing": False}


def flooding_app(
    outcome: asyncio.Future[tuple[int, int]], offered: int, yield_between: bool
) -> Any:
    """An app offering *offered* 16 KiB frames to send_frame (yielding to the loop after
    each, or all in one iteration), then reporting ``(written, dropped)``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        send_frame = scope["extensions"]["chanlite.frames"]["send_frame"]
        await receive()
        await send({"type": "websocket.accept"})
        frame = Frame(Opcode.BINARY, b"x" * 16384).serialize(mask=False, extensions=[])
        written = 0
        for _ in range(offered):
            if send_frame(frame):
                written += 1
            if yield_between:
                await asyncio.sleep(0)
        outcome.set_result((written, offered - written))
        await receive()

    return app


def ws_connection(server: Server) -> WebSocketConnection:
    assert server.state is not None
    conns = [c for c in server.state.connections if isinstance(c, WebSocketConnection)]
    assert len(conns) == 1
    return conns[0]


async def test_send_frame_closes_a_client_that_never_reads_as_a_slow_consumer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcome: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
    # 32 MiB offered; the client reads nothing; the send limit is 1 MiB.
    app = flooding_app(outcome, 2000, yield_between=True)
    limit = 1024 * 1024
    async with running(app, lifespan="off", high_water=65536, ws_send_limit=limit) as server:
        ws, _ = await RawWebSocket.connect(server.bound_port or 0)  # and never reads
        port = ws.writer.get_extra_info("sockname")[1]
        conn = ws_connection(server)
        written, refused = await asyncio.wait_for(outcome, 15)
        assert refused > 0 and written < 2000
        # Nothing was dropped while the socket stayed open: the first refusal closed it.
        assert not conn.is_open and conn.slow
        assert server.state is not None and server.state.slow_consumers == 1
        assert conn.transport.get_write_buffer_size() <= limit + 16384 + 16
        ws.writer.close()
    warnings = [r for r in caplog.records if "slow consumer" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    assert f"127.0.0.1:{port}" in warnings[0].getMessage()


async def test_send_frame_coalesced_keeps_order_with_asgi_sends() -> None:
    """Frames queued by send_frame in one loop iteration go out before any later ordinary
    send, close included, and in the order they were queued."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        send_frame = scope["extensions"]["chanlite.frames"]["send_frame"]
        await receive()
        await send({"type": "websocket.accept"})
        for i in range(3):  # no await between these send_frame calls: all queued at once
            assert send_frame(text_frame(f"q{i}a"))
            assert send_frame(text_frame(f"q{i}b"))
            await send({"type": "websocket.send", "text": f"asgi{i}"})
        assert send_frame(text_frame("last"))
        await send({"type": "websocket.close", "code": 1000})

    async with running(app, lifespan="off") as server:
        ws, _ = await RawWebSocket.connect(server.bound_port or 0)
        received = []
        while True:
            frame = await ws.next_frame()
            assert frame is not None
            if frame.opcode is Opcode.CLOSE:
                break
            received.append(frame.data.decode())
        ws.writer.close()
    assert received == [
        *("q0a", "q0b", "asgi0", "q1a", "q1b", "asgi1", "q2a", "q2b", "asgi2"),
        "last",
    ]


async def test_the_send_limit_counts_frames_still_queued() -> None:
    """The send limit counts frames queued in this loop iteration, not only the
    transport's buffer."""
    outcome: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
    app = flooding_app(outcome, 100, yield_between=False)  # 1.6 MiB, no yield
    limit = 4 * 65536
    async with running(app, lifespan="off", high_water=65536, ws_send_limit=limit) as server:
        ws, _ = await RawWebSocket.connect(server.bound_port or 0)  # and never reads
        written, refused = await asyncio.wait_for(outcome, 10)
        # 15 frames of 16388 bytes fit under 256 KiB; the 16th would pass it and closes
        # the connection (1013), after which nothing more is taken.
        assert (written, refused) == (15, 85)
        assert ws_connection(server).slow
        ws.writer.close()


async def test_close_between_fragments_is_a_normal_close(echo_server: Server) -> None:
    ws, _ = await RawWebSocket.connect(echo_server.bound_port or 0)
    ws.send(Opcode.TEXT, b"first half", fin=False)
    ws.send(Opcode.CLOSE, Close(1000, "").serialize())
    assert (await ws.close_frame()).code == 1000
    await ws.eof()


async def test_a_middleware_that_drops_the_frames_extension_sees_every_send() -> None:
    from chanlite import App, WebSocket

    seen: list[Any] = []

    def watching(inner: Any) -> Any:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            async def watched_send(message: Message) -> None:
                seen.append(message.get("text", message.get("bytes")))
                await send(message)

            if scope.get("path") == "/ws/watched":
                scope = dict(scope)
                scope["extensions"] = {
                    k: v for k, v in scope["extensions"].items() if k != "chanlite.frames"
                }
            await inner(scope, receive, watched_send)

        return middleware

    app = App()
    app.add_middleware(watching)

    @app.websocket("/ws/{name}")
    async def echo(ws: WebSocket, name: str) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            await ws.send_text(text)
            await ws.send_bytes(text.encode())

    async with running(app, lifespan="off") as server:
        for path in ("/ws/watched", "/ws/direct"):
            async with connect(url(server, path)) as ws:
                await ws.send(path)
                assert [await ws.recv(), await ws.recv()] == [path, path.encode()]
    # Both accepts pass the wrapper; data frames only where the extension was dropped,
    # the other connection's went straight to the server.
    assert seen == [None, "/ws/watched", b"/ws/watched", None]


async def test_send_now_frames_text_and_binary_small_and_large() -> None:
    errors: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        send_now = scope["extensions"]["chanlite.frames"]["send_now"]
        for data, text in (("hé", True), (b"\x00\xff", False), ("é" * 100, True)):
            assert send_now(data, text) is True  # "é" * 100: 200 bytes, the general path
        assert send_now(b"\x01" * 300, False) is True
        for data, text in ((b"raw", True), ("str", False)):
            try:
                send_now(data, text)
            except TypeError as exc:
                errors.append(str(exc))
        await send({"type": "websocket.send", "text": "done"})
        await receive()

    async with running(app, lifespan="off") as server:
        async with connect(url(server, "/ws")) as ws:
            received = [await ws.recv() for _ in range(5)]
    assert received == ["hé", b"\x00\xff", "é" * 100, b"\x01" * 300, "done"]
    assert errors == [
        "send_now(text=True) needs a str, not bytes",
        "send_now(text=False) needs bytes, not str",
    ]


async def test_broadcast_flush_goes_on_past_a_connection_that_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from chanlite.server.config import Config
    from chanlite.server.state import ServerState

    async def no_app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover
        pass

    flushed: list[str] = []

    class Queued:
        def __init__(self, name: str) -> None:
            self.name = name

        def flush_pending(self) -> None:
            if self.name == "broken":
                raise RuntimeError("transport gone bad")
            flushed.append(self.name)

    state = ServerState(Config(no_app, port=0), no_app)
    state.dirty = [Queued("a"), Queued("broken"), Queued("c")]
    state.flush_scheduled = True
    state.flush_dirty()  # defers itself once, behind what is already waiting
    assert flushed == []
    for _ in range(3):
        await asyncio.sleep(0)
    assert flushed == ["a", "c"]
    assert not state.flush_scheduled and not state.dirty
    assert "Writing queued broadcast frames failed" in caplog.text
