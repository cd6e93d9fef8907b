"""Hostile and slow clients against a real server: bounded memory, no silent loss, every
refusal logged.

The memory tests run ``chanlite run`` as a process and read its RSS from /proc; the others
use an in-process server on a real port. Each is a regression test for a finding of the
adversarial review (issue 14): it fails on the server before the per-connection budget.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from typing import Any

import pytest
from websockets.frames import Close, Opcode

from chanlite.server import Server
from chanlite.types import Receive, Scope, Send
from tests.server.conftest import RawClient, running
from tests.server.hostile import Reader, connect, fragment_flood_chunk, masked, ping_flood, pump
from tests.server.hostile import rss_mib as rss
from tests.server.procs import Running, start
from tests.server.test_websocket import RawWebSocket

pytestmark = pytest.mark.timeout(90)
MiB = 1 << 20


def port_of(running: Running) -> int:
    return int(running.url.rsplit(":", 1)[1])


def members(running: Running) -> int:
    return int(running.get("/members"))


# -- memory: real processes ----------------------------------------------------------


def test_ping_flood_stops_reading_and_closes_a_slow_consumer(served: list[Running]) -> None:
    """Finding 1: pings from a client that never reads its pongs grew the server without
    limit (64 MiB of pings: +95 MiB). Now reading stops above the high-water mark, and
    the client is closed 1013 once its queue stays full past --ws-send-timeout."""
    server = start(
        "tests/server/apps.py:pid_app",
        "--ws-max-control-frames", "0",  # the rate limit would end the flood first
        "--ws-send-timeout", "2",
        "--log-level", "warning",
    )  # fmt: skip
    served.append(server)
    pid = server.proc.pid
    before = rss(pid)
    sent, sock = ping_flood("127.0.0.1", port_of(server), total=64 * MiB, seconds=30)
    during = rss(pid)
    client_port = sock.getsockname()[1]
    assert sent < 32 * MiB, f"the server kept reading: {sent / MiB:.1f} MiB of pings taken"
    assert during - before < 24, (before, during)
    deadline = time.monotonic() + 15
    while "slow consumer" not in _stderr_so_far(server):  # still not reading
        assert time.monotonic() < deadline, "the flooding client was not closed"
        time.sleep(0.2)
    close = Reader(sock).close_frame(timeout=20)
    sock.close()
    assert close is not None and (close.code, close.reason) == (1013, "slow consumer")
    _memory_returns(pid, before)
    code, err = server.stop()
    assert code == 0, err
    err = "".join(server.banner) + err
    warnings = [line for line in err.splitlines() if "slow consumer" in line]
    assert len(warnings) == 1 and " WARNING:  " in warnings[0], err
    assert f"127.0.0.1:{client_port}" in warnings[0]


def test_empty_continuation_frames_are_limited(served: list[Running]) -> None:
    """Finding 3: millions of 0-byte continuation frames got around --ws-max-size
    (6.1 M frames: +38 MiB, 100 % CPU, never closed). Now a message has at most
    --ws-max-fragments frames: the flood is closed 1002 "too many fragments" at once."""
    server = start("tests/server/apps.py:pid_app", "--log-level", "debug")
    served.append(server)
    pid = server.proc.pid
    before = rss(pid)
    sock = connect("127.0.0.1", port_of(server))
    sock.sendall(masked(Opcode.TEXT, b"start", fin=False))
    total = 6_100_000 * 6
    sent = pump(sock, fragment_flood_chunk(), total, stall=2.0, deadline=time.monotonic() + 40)
    during = rss(pid)
    assert sent < total // 4, f"not closed: {sent / MiB:.1f} MiB of empty fragments taken"
    assert during - before < 16, (before, during)
    close = Reader(sock).close_frame(timeout=10)  # None: the RST overtook the close frame
    sock.close()
    assert close is None or (close.code, close.reason) == (1002, "too many fragments")
    _memory_returns(pid, before)
    code, err = server.stop()
    assert code == 0, err
    assert re.search(r"DEBUG: .*closed 1002: too many fragments", err), err


def test_broadcasts_reach_a_reader_in_order_and_a_member_that_never_reads_is_closed(
    served: list[Running],
) -> None:
    """Finding 4: a client reading as fast as it could got 108 of 300 x 10 KB broadcasts
    (send_frame refused past 4 x high_water queued). Now every frame is queued; a member
    that never reads is closed 1013 after --ws-send-timeout while the others go on."""
    server = start(
        "tests/server/apps.py:broadcast_app", "--ws-send-timeout", "2", "--log-level", "warning"
    )
    served.append(server)
    pid = server.proc.pid
    before = rss(pid)
    port = port_of(server)
    reader = connect("127.0.0.1", port)
    sleeper = connect("127.0.0.1", port, rcvbuf=4096)  # never reads
    sleeper_port = sleeper.getsockname()[1]
    deadline = time.monotonic() + 10
    while members(server) < 2:
        assert time.monotonic() < deadline, "the two members did not join"
        time.sleep(0.05)
    frames = Reader(reader)

    def burst() -> list[int]:
        reader.sendall(masked(Opcode.TEXT, b"burst 300 10240"))
        numbers = []
        while True:
            frame = frames.data_frame()
            assert frame is not None, f"closed after {len(numbers)} frames"
            if frame.data == b"burst done":
                return numbers
            assert len(frame.data) == 10240
            numbers.append(int(frame.data[:6]))

    assert burst() == list(range(300))
    during = rss(pid)
    # The sleeper's queue stays above high_water: it is closed 1013 after 2 s.
    deadline = time.monotonic() + 15
    while "slow consumer" not in _stderr_so_far(server):
        assert time.monotonic() < deadline, "the member that never reads was not closed"
        time.sleep(0.2)
    assert burst() == list(range(300))  # the reader is untouched
    assert members(server) == 1
    sleeper.close()
    reader.close()
    assert during - before < 40, (before, during)
    code, err = server.stop()
    assert code == 0, err
    err = "".join(server.banner) + err
    warnings = [line for line in err.splitlines() if "slow consumer" in line]
    assert len(warnings) == 1 and f"127.0.0.1:{sleeper_port}" in warnings[0], err


#: How far above its RSS before an attack a server may stay once the attacker left.
RETURN_MARGIN_MIB = 8.0


def _memory_returns(pid: int, before: float, timeout: float = 15.0) -> float:
    """Wait until the server's RSS is back within RETURN_MARGIN_MIB of *before*."""
    deadline = time.monotonic() + timeout
    while (now := rss(pid)) - before > RETURN_MARGIN_MIB:
        assert time.monotonic() < deadline, f"RSS {now:.1f} MiB, {before:.1f} MiB before"
        time.sleep(0.2)
    return now


def test_memory_taken_by_slow_readers_is_given_back(served: list[Running]) -> None:
    """Twenty clients that send 1 MB messages to an echo and never read the answers take
    the server up by about 100 MiB (each at most --ws-send-limit queued plus 16 messages
    waiting). Once the slow-consumer policy closed them and they left, the memory goes
    back to the OS: RSS returns within RETURN_MARGIN_MIB of where it was (it stayed at
    the peak before: glibc kept the freed buffers, some still held by reference cycles)."""
    server = start(
        "tests/server/apps.py:pid_app",
        "--ws-send-timeout", "1",
        "--log-level", "error",
        "--no-access-log",
    )  # fmt: skip
    served.append(server)
    pid = server.proc.pid
    port = port_of(server)
    before = rss(pid)
    message = masked(Opcode.TEXT, b"y" * 1_000_000)
    clients: list[socket.socket] = []
    taken: list[int] = []

    def slow_reader() -> None:
        sock = connect("127.0.0.1", port, rcvbuf=4096)
        clients.append(sock)
        taken.append(pump(sock, message, 40 * len(message), 2.0, time.monotonic() + 20))

    threads = [threading.Thread(target=slow_reader) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    during = rss(pid)
    assert during - before > 40, f"the attack took too little to tell: {before} -> {during}"
    for sock in clients:
        sock.close()
    after = _memory_returns(pid, before)
    code, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err, err
    print(f"RSS before {before:.1f} MiB, during {during:.1f} MiB, after {after:.1f} MiB")


def _stderr_so_far(server: Running) -> str:
    """Lines the server wrote to stderr since the banner (non-blocking)."""
    import os
    import selectors

    assert server.proc.stderr is not None
    fd = server.proc.stderr.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    chunks = []
    while selector.select(timeout=0):
        data = os.read(fd, 65536)
        if not data:
            break
        chunks.append(data.decode())
    selector.close()
    text = "".join(chunks)
    server.banner.append(text)  # keep it for stop()'s caller
    return "".join(server.banner)


# -- in-process server, real sockets -------------------------------------------------


async def test_a_control_frame_flood_is_closed_1002(echo_server: Server) -> None:
    ws, _ = await RawWebSocket.connect(echo_server.bound_port or 0)
    ws.writer.write(masked(Opcode.PING, b"x") * 150)  # the default allows 100 a second
    close = await ws.close_frame()
    assert (close.code, close.reason) == (1002, "too many control frames")
    ws.writer.close()


async def test_keep_alive_timeout_really_closes_sockets_with_unsent_bytes() -> None:
    """Finding 5: a socket dropped by the keep-alive timeout with a response still unsent
    (the client does not read) stayed established for good, uncounted. Now it gets
    --timeout-response-write to take it, then the transport is aborted."""
    big = b"x" * (4 * MiB)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": big})

    options: dict[str, Any] = {"timeout_keep_alive": 0.2, "timeout_response_write": 1.0}
    async with running(app, lifespan="off", **options) as server:
        assert server.state is not None
        clients = []
        for _ in range(20):
            client = await RawClient.connect(server.bound_port or 0)
            await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # and never reads
            clients.append(client)
        async with asyncio.timeout(15):
            while server.state.connections or server.state.lingering:
                await asyncio.sleep(0.05)
        for client in clients:
            await client.wait_closed(timeout=10)  # EOF or reset, not a hang
            await client.close()
        assert server.state.active == 0


async def test_connections_lingering_with_unsent_bytes_count_against_the_limit() -> None:
    big = b"x" * (32 * MiB)  # more than the kernel's socket buffers take

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": big})

    options: dict[str, Any] = {
        "timeout_keep_alive": 0.1,
        "timeout_response_write": 30.0,
        "limit_concurrency": 2,
    }
    async with running(app, lifespan="off", **options) as server:
        assert server.state is not None
        stuck = []
        for _ in range(2):
            client = await RawClient.connect(server.bound_port or 0)
            await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # and never reads
            stuck.append(client)
        async with asyncio.timeout(10):
            while server.state.lingering < 2:
                await asyncio.sleep(0.05)
        late = await RawClient.connect(server.bound_port or 0)
        await late.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        response = await late.read_response()
        assert response.status == 503
        for client in (*stuck, late):
            await client.close()


async def test_protocol_closes_and_refused_handshakes_are_logged_at_debug(
    echo_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 10: protocol-error closes and refused handshakes logged nothing."""
    caplog.set_level(logging.DEBUG, logger="chanlite.server")
    cases = [
        (masked(Opcode.TEXT, b"\xff\xfe"), 1007, "invalid UTF-8"),
        (masked(Opcode.CONT, b"x"), 1002, "unexpected continuation frame"),
        (masked(Opcode.TEXT, b"x" * (1024 * 1024 + 1)), 1009, ""),
    ]
    for data, code, reason in cases:
        ws, _ = await RawWebSocket.connect(echo_server.bound_port or 0)
        ws.writer.write(data)
        close = await ws.close_frame()
        assert close.code == code
        ws.writer.close()
        assert any(
            r.levelno == logging.DEBUG
            and f"closed {code}: " in r.getMessage()
            and reason in r.getMessage()
            for r in caplog.records
        ), (code, [r.getMessage() for r in caplog.records])
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server.bound_port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: not-a-key\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 400 ")
    writer.close()
    assert any(
        "handshake from" in r.getMessage() and "refused: 400" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(
    "body",
    [
        b"Content-Length: 5\r\n\r\nhello",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
)
async def test_an_upgrade_request_with_a_body_is_refused_400(
    echo_server: Server, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 11: the body of an Upgrade request was answered 101 and read as frames."""
    caplog.set_level(logging.DEBUG, logger="chanlite.server")
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server.bound_port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + body
    )
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert b"101" not in data.split(b"\r\n", 1)[0]
    writer.close()
    assert any("with a body" in r.getMessage() for r in caplog.records)


async def test_a_stalled_request_body_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="chanlite.server")
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                outcome.set_result("disconnected")
                return
            if not message.get("more_body"):
                outcome.set_result("whole body")
                return

    async with running(app, lifespan="off", timeout_request_body=0.3) as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        assert await asyncio.wait_for(outcome, 10) == "disconnected"
        await client.wait_closed()
        await client.close()
    assert any("Request body timeout" in r.getMessage() for r in caplog.records)


async def test_a_response_the_client_never_reads_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="chanlite.server")
    outcome: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    started = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sent = 0
        for _ in range(64):  # 64 MiB, far more than the socket buffers take
            await send({"type": "http.response.body", "body": b"x" * MiB, "more_body": True})
            sent += 1
        await send({"type": "http.response.body", "body": b""})
        outcome.set_result(sent)

    async with running(app, lifespan="off", timeout_response_write=0.3) as server:
        sock = socket.create_connection(("127.0.0.1", server.bound_port or 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # and never reads
        await asyncio.wait_for(started.wait(), 10)
        async with asyncio.timeout(15):
            while server.state is not None and server.state.connections:
                await asyncio.sleep(0.05)
        sock.close()
        # The app's send returned (the client is gone) instead of waiting for ever.
        assert await asyncio.wait_for(outcome, 10) == 64
    assert any("Response write timeout" in r.getMessage() for r in caplog.records)


async def test_echo_still_works_after_the_limits(echo_server: Server) -> None:
    """The budget does not get in the way of an ordinary client."""
    ws, _ = await RawWebSocket.connect(echo_server.bound_port or 0)
    for size in (10, 200, 70_000):
        ws.send(Opcode.TEXT, b"y" * size)
        frame = await ws.next_frame()
        assert frame is not None and len(frame.data) == size
    ws.send(Opcode.PING, b"hi")
    frame = await ws.next_frame()
    assert frame is not None and frame.opcode is Opcode.PONG and frame.data == b"hi"
    ws.send(Opcode.CLOSE, Close(1000, "").serialize())
    assert (await ws.close_frame()).code == 1000


async def test_a_websocket_closed_with_bytes_unsent_is_aborted_after_the_close_timeout() -> None:
    """A WebSocket the server closes (here: keep-alive ping timeout) while its client
    reads nothing is aborted after --ws-close-timeout instead of staying open."""
    from websockets.frames import Frame

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        frame = Frame(Opcode.BINARY, b"x" * (4 * MiB)).serialize(mask=False, extensions=[])
        assert scope["extensions"]["chanlite.frames"]["send_frame"](frame)
        await receive()

    options: dict[str, Any] = {
        "ws_ping_interval": 0.1,
        "ws_ping_timeout": 0.3,
        "ws_close_timeout": 0.5,
    }
    async with running(app, lifespan="off", **options) as server:
        assert server.state is not None
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.bound_port or 0))
        await asyncio.get_running_loop().sock_sendall(
            sock,
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )  # and never reads
        async with asyncio.timeout(10):
            while not server.state.connections:
                await asyncio.sleep(0.02)
            while server.state.connections:
                await asyncio.sleep(0.05)
        sock.close()


async def test_websockets_waiting_for_the_close_handshake_count_against_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Sockets the server drops are accounted for until they are really gone: two
    WebSockets whose app closed them but whose clients never answer the close frame
    hold both slots of --limit-concurrency 2 (a third handshake gets 503) until the close
    timeout aborts them; then the third is served."""
    caplog.set_level(logging.DEBUG, logger="chanlite.server")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})  # the app is done at once

    options: dict[str, Any] = {"limit_concurrency": 2, "ws_close_timeout": 1.5}
    async with running(app, lifespan="off", **options) as server:
        state = server.state
        assert state is not None
        silent = []
        for _ in range(2):
            ws, head = await RawWebSocket.connect(server.bound_port or 0)
            assert head.startswith(b"HTTP/1.1 101"), head
            assert (await ws.close_frame()).code == 1000  # and never answers it
            silent.append(ws)
        async with asyncio.timeout(5):
            while state.active:  # both apps returned
                await asyncio.sleep(0.02)
        assert state.lingering == 2
        assert len(state.connections) == 2
        _, refused = await RawWebSocket.connect(server.bound_port or 0)
        assert refused.startswith(b"HTTP/1.1 503 "), refused
        # The close timeout aborts both: their clients see the connection end.
        for ws in silent:
            await ws.eof(timeout=10)
            ws.writer.close()
        async with asyncio.timeout(5):
            while state.lingering or state.connections:
                await asyncio.sleep(0.02)
        late, head = await RawWebSocket.connect(server.bound_port or 0)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert (await late.close_frame()).code == 1000
        late.send(Opcode.CLOSE, Close(1000, "").serialize())  # this one answers
        await late.eof()
        late.writer.close()
        async with asyncio.timeout(5):
            while state.lingering or state.connections or state.active:
                await asyncio.sleep(0.02)
    assert any("503" in r.getMessage() for r in caplog.records), caplog.text


def test_freed_memory_can_be_returned_on_this_platform() -> None:
    """The trim is real here (Linux with glibc, where the tests run), a no-op elsewhere."""
    import platform
    import sys

    from chanlite.server import memory

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert memory.supported() is expected
    assert memory.release_free_memory() is expected
    assert memory.collect_garbage() >= 0


def test_client_input_never_becomes_a_traceback_in_the_readme_chat(
    served: list[Running],
) -> None:
    """Finding 9: a binary frame to an ``iter_json`` handler, JSON that is not an object
    with ``text``, invalid JSON and invalid room names gave 1011 and an ERROR traceback
    each. Now each is a precise close (1007 from ``iter_json``, 1008 from the app's own
    check) or is ignored, with no traceback, against ``chanlite run`` over real sockets."""
    server = start("tests/readme_chat_app.py:app", "--log-level", "info")
    served.append(server)
    port = port_of(server)

    def attempt(path: str, frame: bytes) -> tuple[int, str] | str:
        sock = connect("127.0.0.1", port, path=path)
        sock.sendall(frame)
        sock.sendall(masked(Opcode.TEXT, b'{"text": "still here"}'))
        reader = Reader(sock)
        first = reader.next_frame(timeout=10)
        sock.close()
        assert first is not None, path
        if first.opcode is Opcode.CLOSE:
            close = Close.parse(first.data)
            return close.code, close.reason
        return first.data.decode()

    lobby = "/ws/chat/lobby"
    echo = '{"text":"still here"}'  # the app's own answer to the valid message after it
    assert attempt(lobby, masked(Opcode.BINARY, b"\x00bin")) == (1007, "invalid JSON")
    assert attempt(lobby, masked(Opcode.TEXT, b"not json")) == (1007, "invalid JSON")
    assert attempt(lobby, masked(Opcode.TEXT, b"[1, 2]")) == echo  # ignored
    assert attempt(lobby, masked(Opcode.TEXT, b'{"x": 1}')) == echo
    assert attempt(lobby, masked(Opcode.TEXT, b'{"text": 5}')) == echo
    assert attempt("/ws/chat/" + "a" * 120, b"") == (1008, "bad room name")
    assert attempt("/ws/chat/bad%20room", b"") == (1008, "bad room name")
    code, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err and "ERROR" not in err, err
    assert err.count("with 1007") == 2, err  # each refusal logged (INFO), no traceback


async def test_a_frame_of_the_wrong_kind_closes_1003_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Finding 9, over a real socket: a binary frame to a handler reading ``iter_text``
    closed 1011 with an ERROR traceback; now it is 1003 and one INFO line."""
    from chanlite import App, WebSocket

    app = App()

    @app.websocket("/ws")
    async def texts(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            await ws.send_text(text)

    caplog.set_level(logging.INFO)
    async with running(app) as server:
        ws, _ = await RawWebSocket.connect(server.bound_port or 0)
        ws.send(Opcode.TEXT, b"fine")
        frame = await ws.next_frame()
        assert frame is not None and frame.data == b"fine"
        ws.send(Opcode.BINARY, b"\x00\x01")
        close = await ws.close_frame()
        ws.writer.close()
    assert close.code == 1003
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert any(r.levelno == logging.INFO and "1003" in r.getMessage() for r in caplog.records)
