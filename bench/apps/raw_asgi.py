"""Raw ASGI peer: no framework at all, the floor any framework on the same server adds to."""

from __future__ import annotations

from typing import Any

Send = Any
subscribers: set[Any] = set()
HELLO = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"13")],
}
BODY = {"type": "http.response.body", "body": b"Hello, world!"}


async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
    kind = scope["type"]
    if kind == "http":
        await send(HELLO)
        await send(BODY)
    elif kind == "websocket":
        await websocket(scope["path"], receive, send)
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def websocket(path: str, receive: Any, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    if path == "/ws/sub":
        subscribers.add(send)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if path == "/ws/echo":
                await send({"type": "websocket.send", "text": message.get("text")})
            elif path == "/ws/pub":
                out = {"type": "websocket.send", "text": message.get("text")}
                for member in list(subscribers):
                    try:
                        await member(out)
                    except Exception:
                        subscribers.discard(member)
    finally:
        subscribers.discard(send)
