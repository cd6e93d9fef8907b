"""Timeouts, --limit-concurrency and proxy headers, over real sockets."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from chanlite.types import Receive, Scope, Send
from tests.server.conftest import RawClient, echo_app, running

pytestmark = pytest.mark.timeout(20)


async def test_slowloris_header_deadline() -> None:
    async with running(echo_app, timeout_request_header=0.3) as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"GET / HTTP/1.1\r\n")
        for _ in range(3):
            await asyncio.sleep(0.05)
            await client.send(b"X-Drip: 1\r\n")  # trickling never extends the deadline
        assert await client.wait_closed(timeout=3) == b""
        # An idle connection that never sends a byte is closed as well.
        idle = await RawClient.connect(server.bound_port or 0)
        assert await idle.wait_closed(timeout=3) == b""


async def test_keep_alive_idle_timeout() -> None:
    async with running(echo_app, timeout_keep_alive=0.3) as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await client.read_response()).status == 200
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert await client.wait_closed(timeout=3) == b""
        assert loop.time() - began >= 0.25


async def test_websocket_handshake_timeout() -> None:
    async def never_accepts(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await receive()
            await asyncio.sleep(30)

    options = {"ws_handshake_timeout": 0.3, "timeout_graceful_shutdown": 0.5}
    async with running(never_accepts, lifespan="off", **options) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        with pytest.raises(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), 3) == b""
            raise ConnectionResetError  # closed cleanly: also fine
        writer.close()


async def test_limit_concurrency_counts_requests_and_websockets() -> None:
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await receive()
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/hold":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async with running(app, lifespan="off", limit_concurrency=1) as server:
        port = server.bound_port or 0
        holder = await RawClient.connect(port)
        await holder.send(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.sleep(0.1)
        other = await RawClient.connect(port)
        await other.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await other.read_response()).status == 503
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{port}/ws"):
                pass
        assert info.value.response.status_code == 503
        release.set()
        assert (await holder.read_response()).status == 200
        # Now an open WebSocket takes the only slot.
        async with connect(f"ws://127.0.0.1:{port}/ws"):
            third = await RawClient.connect(port)
            await third.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert (await third.read_response()).status == 503
        await asyncio.sleep(0.1)
        fourth = await RawClient.connect(port)
        await fourth.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await fourth.read_response()).status == 200


async def scope_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        body = f"{scope['scheme']} {scope['client'][0]}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": scope["scheme"]})
        await receive()


FORWARDED = b"X-Forwarded-For: 203.0.113.7, 10.0.0.2\r\nX-Forwarded-Proto: https\r\n"


@pytest.mark.parametrize(
    ("allow", "expected"),
    [
        ("127.0.0.1", "https 10.0.0.2"),
        ("127.0.0.1,10.0.0.0/8", "https 203.0.113.7"),
        ("*", "https 203.0.113.7"),
        ("10.9.9.9", "http 127.0.0.1"),
    ],
)
async def test_proxy_headers_only_from_trusted_hosts(allow: str, expected: str) -> None:
    async with running(scope_app, lifespan="off", forwarded_allow_ips=allow) as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n" + FORWARDED + b"\r\n")
        assert (await client.read_response()).text == expected


async def test_proxy_headers_off_and_websocket_scheme() -> None:
    async with running(scope_app, lifespan="off", proxy_headers=False) as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n" + FORWARDED + b"\r\n")
        assert (await client.read_response()).text == "http 127.0.0.1"
    async with running(scope_app, lifespan="off") as server:
        headers = {"X-Forwarded-Proto": "https"}
        async with connect(
            f"ws://127.0.0.1:{server.bound_port}/", additional_headers=headers
        ) as ws:
            assert await ws.recv() == "wss"
