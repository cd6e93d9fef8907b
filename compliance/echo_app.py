"""A raw ASGI 3 echo app for the Autobahn|Testsuite fuzzing client.

It depends on nothing but the ASGI spec, so the same file can be served by chanlite's built-in
server or by any other ASGI server (for comparing scores). Every WebSocket connection is accepted
and every message is sent back unchanged, text as text and bytes as bytes. Message-size limits
belong to the server (``--ws-max-size``), not to this app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def _websocket(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif kind == "websocket.receive":
            if message.get("text") is not None:
                reply = {"type": "websocket.send", "text": message["text"]}
            else:
                reply = {"type": "websocket.send", "bytes": message.get("bytes") or b""}
            try:
                await send(reply)
            except OSError:
                # ASGI servers raise OSError when the peer has already closed (many fuzzing
                # cases close right after sending); the connection is over, nothing to echo.
                return
        elif kind == "websocket.disconnect":
            return


async def _http(receive: Receive, send: Send) -> None:
    # Drain the request body so the server can keep the connection alive.
    while True:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            break
    body = b"WebSocket echo app for the Autobahn fuzzing client\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo WebSocket messages back; answer plain HTTP with a short text body."""
    kind = scope["type"]
    if kind == "websocket":
        await _websocket(receive, send)
    elif kind == "http":
        await _http(receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)
