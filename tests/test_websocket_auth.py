"""Authenticating a WebSocket outside Django: a token in the query, a cookie or a header
sets ``ws.user``; a refusal is a clean 403 before accept, over real sockets too."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from chanlite import App, WebSocket
from chanlite.testing import TestClient
from chanlite.testing.websocket import WebSocketRejected
from tests.server.conftest import running

USERS = {"t-alice": "alice", "t-bob": "bob"}


def auth_app() -> tuple[App, list[str]]:
    app = App(layer=None)
    ran: list[str] = []

    @app.authenticate
    async def user_from_token(ws: WebSocket) -> str | None:
        token = (
            ws.query_params.get("token")
            or ws.cookies.get("token")
            or ws.headers.get("authorization", "").removeprefix("Bearer ")
        )
        return USERS.get(token)

    @app.websocket("/ws")
    async def hello(ws: WebSocket) -> None:
        ran.append(ws.user)
        await ws.accept()
        await ws.send_text(f"hello {ws.user}")

    def staff_only(ws: WebSocket) -> Any:  # a plain def runs on a thread
        return "staff" if ws.headers.get("x-staff") == "yes" else None

    @app.websocket("/staff", auth=staff_only)
    async def staff(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(f"hello {ws.user}")

    return app, ran


async def test_a_token_in_the_query_a_cookie_or_a_header_sets_ws_user() -> None:
    app, _ = auth_app()
    async with TestClient(app) as client:
        async with client.websocket("/ws?token=t-alice") as ws:
            assert await ws.receive_text() == "hello alice"
        async with client.websocket("/ws", cookies={"token": "t-bob"}) as ws:
            assert await ws.receive_text() == "hello bob"
        async with client.websocket("/ws", headers={"authorization": "Bearer t-bob"}) as ws:
            assert await ws.receive_text() == "hello bob"
        async with client.websocket("/staff", headers={"x-staff": "yes"}) as ws:
            assert await ws.receive_text() == "hello staff"


async def test_a_refusal_is_403_before_accept_and_the_handler_never_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, ran = auth_app()
    caplog.set_level(logging.INFO, logger="chanlite")
    async with TestClient(app) as client:
        with pytest.raises(WebSocketRejected) as info:
            async with client.websocket("/ws?token=wrong"):
                pass
        assert info.value.response.status_code == 403
        with pytest.raises(WebSocketRejected):
            async with client.websocket("/staff?token=t-alice"):  # the route's own hook
                pass
    assert ran == []
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused[0] == "WebSocket /ws from testclient:50000 refused: not authenticated"


async def test_over_a_real_socket_the_refusal_is_an_http_403() -> None:
    app, _ = auth_app()
    async with running(app) as server:
        url = f"ws://127.0.0.1:{server.bound_port}/ws"
        with pytest.raises(InvalidStatus) as info:
            async with connect(url + "?token=nope"):
                pass
        assert info.value.response.status_code == 403
        async with connect(url, additional_headers={"Cookie": "token=t-alice"}) as ws:
            assert await ws.recv() == "hello alice"
