"""Starlette peer: the broadcast loop users write (a set of sockets, one await per member)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

subscribers: set[WebSocket] = set()


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello, world!")


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            await ws.send_text(await ws.receive_text())
    except WebSocketDisconnect:
        pass


async def sub(ws: WebSocket) -> None:
    await ws.accept()
    subscribers.add(ws)
    try:
        while True:
            await ws.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        subscribers.discard(ws)


async def pub(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            text = await ws.receive_text()
            for member in list(subscribers):
                try:
                    await member.send_text(text)
                except Exception:
                    subscribers.discard(member)
    except WebSocketDisconnect:
        pass


app = Starlette(
    routes=[
        Route("/", hello),
        WebSocketRoute("/ws/echo", echo),
        WebSocketRoute("/ws/sub", sub),
        WebSocketRoute("/ws/pub", pub),
    ]
)
