"""Small apps the subprocess tests serve with ``chanlite run tests/server/apps.py:<name>``."""

from __future__ import annotations

import asyncio
import os

from chanlite.types import Receive, Scope, Send

GREETING = "hello"


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def pid_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with its process id, root_path and a greeting; echoes WebSocket text."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text") or ""})
        return
    if scope["path"].endswith("/slow"):
        await asyncio.sleep(1.0)
    body = f"{GREETING} {os.getpid()} {scope['root_path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def failing_startup(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database is on fire"})


def _chanlite_app() -> object:
    from chanlite.app import App

    return App()


chanlite_app = _chanlite_app()

not_an_app = 42


def _shutdown_marker_app() -> object:
    import sys

    from chanlite.app import App

    app = App()

    @app.on_shutdown
    async def announce() -> None:
        await asyncio.sleep(0.3)  # long enough for a duplicate signal to land meanwhile
        print(f"shutdown hook done {os.getpid()}", file=sys.stderr, flush=True)

    return app


shutdown_marker_app = _shutdown_marker_app()


_members: set[object] = set()


async def broadcast_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Every WebSocket is a member; ``burst N SIZE`` writes N frames of SIZE bytes (each
    starting with its six-digit number) to every member with ``send_frame``, in one loop
    iteration, then answers ``burst done``. A member whose socket is no longer open
    leaves the group."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(_members)})
        return
    from websockets.frames import Frame, Opcode

    send_frame = scope["extensions"]["chanlite.frames"]["send_frame"]
    await receive()
    await send({"type": "websocket.accept"})
    _members.add(send_frame)
    try:
        while (message := await receive())["type"] == "websocket.receive":
            _, count, size = (message.get("text") or "burst 0 6").split()
            for i in range(int(count)):
                data = b"%06d" % i + b"x" * (int(size) - 6)
                frame = Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])
                for member in list(_members):
                    if not member(frame):  # type: ignore[operator]
                        _members.discard(member)
            await send({"type": "websocket.send", "text": "burst done"})
    finally:
        _members.discard(send_frame)
