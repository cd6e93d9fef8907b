"""SyncTestClient: a chanlite App driven from plain ``def`` tests, as Starlette's client is."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chanlite import App, Request, WebSocket
from chanlite.exceptions import WebSocketDisconnect
from chanlite.testing import SyncTestClient
from chanlite.testing.client import WebSocketRejected

pytestmark = pytest.mark.timeout(20)


def make_app() -> tuple[App, list[str]]:
    app = App(layer="memory://")
    seen: list[str] = []

    @app.on_startup
    async def started() -> None:
        seen.append("startup")

    @app.on_shutdown
    async def stopped() -> None:
        seen.append("shutdown")

    @app.http("/items/{id:int}", methods=["GET", "POST"])
    async def item(request: Request, id: int) -> Any:
        if request.method == "POST":
            return {"id": id, "got": await request.json()}
        return {"id": id}

    @app.http("/boom")
    async def boom(request: Request) -> Any:
        raise ValueError("boom")

    @app.websocket("/ws/chat/{room}")
    async def chat(ws: WebSocket, room: str) -> None:
        if room == "closed":
            await ws.close(1008)
            return
        await ws.accept()
        await ws.join(f"chat.{room}")
        async for msg in ws.iter_json():
            await ws.group_send(f"chat.{room}", {"type": "chat.message", "text": msg["text"]})

    @chat.on("chat.message")
    async def chat_message(ws: WebSocket, event: dict[str, Any]) -> None:
        await ws.send_json({"text": event["text"]})

    return app, seen


def test_http_websocket_and_lifespan_from_a_sync_test() -> None:
    app, seen = make_app()
    with SyncTestClient(app) as client:
        assert seen == ["startup"]
        assert client.get("/items/3").json() == {"id": 3}
        assert client.post("/items/4", json={"a": 1}).json() == {"id": 4, "got": {"a": 1}}
        with (
            client.websocket_connect("/ws/chat/lobby") as one,
            client.websocket("/ws/chat/lobby") as two,
        ):
            one.send_json({"text": "hi"})
            assert one.receive_json() == {"text": "hi"}
            assert two.receive_json() == {"text": "hi"}
    assert seen == ["startup", "shutdown"]


def test_a_handler_exception_is_raised_in_the_test() -> None:
    app, _ = make_app()
    with SyncTestClient(app) as client, pytest.raises(ValueError, match="boom"):
        client.get("/boom")
    with SyncTestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/boom").status_code == 500


def test_a_refused_handshake_and_a_close() -> None:
    app, _ = make_app()
    with SyncTestClient(app) as client:
        with pytest.raises(WebSocketRejected), client.websocket_connect("/ws/chat/closed"):
            pass
        with client.websocket_connect("/ws/chat/x") as ws:
            ws.close()
            with pytest.raises(WebSocketDisconnect):
                ws.receive_text()


def test_without_with_no_lifespan_runs_and_close_ends_the_thread() -> None:
    app, seen = make_app()
    client = SyncTestClient(app)
    before = threading.active_count()
    assert client.get("/items/1").json() == {"id": 1}
    assert seen == []
    client.close()
    assert threading.active_count() <= before
