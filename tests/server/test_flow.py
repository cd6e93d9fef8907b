"""Backpressure both ways and graceful shutdown, over real sockets."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chanlite import App, WebSocket, WebSocketDisconnect
from chanlite.server import ClientDisconnected, Server
from chanlite.server.connection import HTTPConnection
from chanlite.server.ws_connection import MAX_QUEUED, WebSocketConnection
from chanlite.types import Receive, Scope, Send
from tests.server.conftest import RawClient, running
from tests.server.procs import APPS, ROOT, start
from tests.server.test_websocket import RawWebSocket

pytestmark = pytest.mark.timeout(30)
HIGH = 65536


def connections(server: Server, kind: type) -> list[Any]:
    assert server.state is not None
    return [c for c in server.state.connections if isinstance(c, kind)]


async def test_http_reading_pauses_while_the_app_is_behind() -> None:
    go = asyncio.Event()
    received: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await go.wait()
        while True:
            message = await receive()
            received.append(len(message["body"]))
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(sum(received)).encode()})

    async with running(app, lifespan="off", high_water=HIGH) as server:
        client = await RawClient.connect(server.bound_port or 0)
        total = 16 * 1024 * 1024
        client.writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % total)
        client.writer.write(b"x" * total)  # far more than the kernel buffers hold
        await asyncio.sleep(0.5)
        (conn,) = connections(server, HTTPConnection)
        assert conn.read_paused
        assert len(conn.cycles[0].body) <= HIGH + 1024 * 1024  # one read's worth over
        go.set()
        await client.writer.drain()
        response = await client.read_response(timeout=20)
        assert response.body == str(total).encode()


async def test_http_send_waits_for_a_slow_reader_and_is_released_on_disconnect() -> None:
    progress: list[int] = []
    finished = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"y" * 65536
        for i in range(2000):  # 128 MiB if nobody pushed back
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            progress.append(i)
        finished.set()

    async with running(app, lifespan="off", high_water=HIGH) as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.sleep(0.5)
        sent = len(progress)
        await asyncio.sleep(0.3)
        assert len(progress) == sent < 2000  # stalled: the client is not reading
        (conn,) = connections(server, HTTPConnection)
        assert conn.transport.get_write_buffer_size() <= HIGH + 2 * 65536
        client.writer.transport.abort()
        await asyncio.wait_for(finished.wait(), 5)  # the waiting send was released


async def test_websocket_reading_pauses_when_the_app_does_not_receive() -> None:
    go = asyncio.Event()
    count = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal count
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await go.wait()
        while (await receive())["type"] == "websocket.receive":
            count += 1

    async with running(app, lifespan="off", ws_per_message_deflate=False) as server:
        ws, _ = await RawWebSocket.connect(server.bound_port or 0)
        from websockets.frames import Opcode

        for _ in range(5000):
            ws.send(Opcode.BINARY, b"z" * 1024)
        await asyncio.sleep(0.5)
        (conn,) = connections(server, WebSocketConnection)
        assert conn.read_paused
        assert len(conn.queue) < MAX_QUEUED + 1200  # bounded by one read's worth
        go.set()
        await ws.writer.drain()
        async with asyncio.timeout(10):
            while count < 5000:
                await asyncio.sleep(0.05)
        ws.writer.close()


async def test_websocket_send_waits_and_raises_after_disconnect() -> None:
    progress: list[int] = []
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        try:
            for i in range(2000):
                await send({"type": "websocket.send", "bytes": b"w" * 65536})
                progress.append(i)
        except ClientDisconnected as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    await _sends_stall_until_the_client_goes(app, progress, outcome, ClientDisconnected)


async def _sends_stall_until_the_client_goes(
    app: Any,
    progress: list[int],
    outcome: asyncio.Future[BaseException | None],
    raised: type[BaseException],
) -> None:
    """Serve *app* to a client that never reads: its sends must stop making progress
    (the buffer is full), and end with *raised* once the client is gone."""
    options = {"high_water": HIGH, "ws_per_message_deflate": False}
    async with running(app, lifespan="off", **options) as server:
        ws, _ = await RawWebSocket.connect(server.bound_port or 0)  # never reads
        await asyncio.sleep(0.5)
        sent = len(progress)
        await asyncio.sleep(0.3)
        assert 0 < len(progress) == sent < 2000
        ws.writer.transport.abort()
        assert isinstance(await asyncio.wait_for(outcome, 5), raised)


async def test_app_sends_wait_for_a_slow_client_too() -> None:
    # A chanlite App on its own server writes straight to the connection while the
    # client keeps up; once the buffer is over the high-water mark it must wait the
    # same way, and end with WebSocketDisconnect when the client goes.
    progress: list[int] = []
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    app = App()

    @app.websocket("/ws")
    async def flood(ws: WebSocket) -> None:
        await ws.accept()
        try:
            for i in range(2000):
                await (ws.send_bytes(b"w" * 65536) if i % 2 else ws.send_text("t" * 65536))
                progress.append(i)
        except WebSocketDisconnect as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    await _sends_stall_until_the_client_goes(app, progress, outcome, WebSocketDisconnect)


async def test_graceful_shutdown_finishes_http_and_closes_websockets_1001() -> None:
    log: list[str] = []
    in_flight = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    log.append("lifespan shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            log.append(f"ws {(await receive())['code']}")
        else:
            in_flight.set()
            await asyncio.sleep(0.4)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"finished"})
            log.append("http done")

    async with running(app) as server:
        port = server.bound_port or 0
        ws = await connect(f"ws://127.0.0.1:{port}/")
        client = await RawClient.connect(port)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await in_flight.wait()
        server.should_exit = True
        response = await client.read_response()
        assert response.body == b"finished"
        assert response.headers[b"connection"] == b"close"
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        with pytest.raises(OSError):
            await RawClient.connect(port)  # no longer accepting
    assert log == ["ws 1001", "http done", "lifespan shutdown"]


async def test_graceful_shutdown_is_bounded() -> None:
    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(60)

    loop = asyncio.get_running_loop()
    async with running(stuck, lifespan="off", timeout_graceful_shutdown=0.3) as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.sleep(0.1)
        began = loop.time()
        server.should_exit = True
    assert loop.time() - began < 3
    await client.wait_closed()


def test_sigterm_drains_and_second_signal_forces() -> None:
    running_ = start(f"{APPS}:pid_app", "--no-access-log")
    procs = [running_.proc]
    try:
        url = running_.url
        results: list[Any] = []

        def fetch() -> None:
            try:
                with urllib.request.urlopen(url + "/slow", timeout=10) as response:
                    results.append(response.read())
            except OSError as exc:
                results.append(exc)

        thread = threading.Thread(target=fetch)
        thread.start()
        time.sleep(0.3)
        code, _ = running_.stop(signal.SIGTERM)
        thread.join(10)
        assert code == 0
        assert results and isinstance(results[0], bytes) and results[0].startswith(b"hello")

        forced = start(f"{APPS}:pid_app", "--no-access-log", "--timeout-graceful-shutdown", "30")
        procs.append(forced.proc)
        host, port = forced.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.2)
            began = time.monotonic()
            forced.proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)  # two signals sent at once may arrive as one
            forced.proc.send_signal(signal.SIGTERM)
            forced.proc.communicate(timeout=10)
            assert time.monotonic() - began < 0.9  # did not wait for /slow's full second
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def test_group_sigterm_to_workers_still_runs_shutdown_hooks(tmp_path: Path) -> None:
    # `kill -TERM -PGID` (systemd, timeout(1)) reaches each worker twice: directly and
    # forwarded by the supervisor. The duplicate must not skip the app's shutdown.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chanlite",
            "run",
            f"{APPS}:shutdown_marker_app",
            "--workers",
            "2",
            "--port",
            "0",
            "--no-access-log",
            "--layer",
            f"sqlite:///{tmp_path / 'l.db'}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 40
        seen = ""
        while "layer:" not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        assert "layer:" in seen, seen
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert err.count("shutdown hook done") == 2, err
        assert "CancelledError" not in err and "Exception in lifespan" not in err, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
