from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from chanlite import App, HTMLResponse, HTTPException, JSONResponse, Request, Response
from chanlite.exceptions import RegistrationClosed
from chanlite.testing import TestClient
from chanlite.types import Receive, Scope, Send


def make_app(**options: Any) -> App:
    app = App(**options)

    @app.http("/health")
    async def health(request: Request) -> dict[str, bool]:
        return {"ok": True}

    @app.http("/items/{id:int}", methods=["GET", "POST"])
    async def item(request: Request, id: int) -> Any:
        if request.method == "POST":
            body = await request.json()
            return {"id": id, "got": body}, 201
        return {"id": id, "q": request.query_params.get("q")}

    @app.http("/text")
    async def text(request: Request) -> str:
        return "plain words"

    @app.http("/bytes")
    async def raw(request: Request) -> bytes:
        return b"\x00\x01"

    @app.http("/html")
    async def html(request: Request) -> HTMLResponse:
        return HTMLResponse("<h1>hi</h1>")

    @app.http("/teapot")
    async def teapot(request: Request) -> Response:
        raise HTTPException(418, "short and stout")

    @app.http("/boom")
    async def boom(request: Request) -> Response:
        raise RuntimeError("kaboom")

    @app.http("/cookie")
    async def cookie(request: Request) -> dict[str, str]:
        return dict(request.cookies)

    return app


async def test_json_text_bytes_html() -> None:
    async with TestClient(make_app()) as client:
        r = await client.get("/health")
        assert (r.status_code, r.json()) == (200, {"ok": True})
        assert r.headers["content-type"] == "application/json"
        r = await client.get("/text")
        assert r.text == "plain words"
        assert r.headers["content-type"].startswith("text/plain")
        r = await client.get("/bytes")
        assert r.content == b"\x00\x01"
        r = await client.get("/html")
        assert r.headers["content-type"].startswith("text/html")


async def test_path_and_query_params() -> None:
    async with TestClient(make_app()) as client:
        r = await client.get("/items/5", params={"q": "hats"})
        assert r.json() == {"id": 5, "q": "hats"}


async def test_post_with_status_tuple() -> None:
    async with TestClient(make_app()) as client:
        r = await client.post("/items/9", json={"name": "x"})
        assert r.status_code == 201
        assert r.json() == {"id": 9, "got": {"name": "x"}}


async def test_404_and_405_with_allow() -> None:
    async with TestClient(make_app()) as client:
        assert (await client.get("/nowhere")).status_code == 404
        r = await client.delete("/items/1")
        assert r.status_code == 405
        assert r.headers["allow"] == "GET, HEAD, POST"


async def test_http_exception() -> None:
    async with TestClient(make_app()) as client:
        r = await client.get("/teapot")
        assert (r.status_code, r.text) == (418, "short and stout")


async def test_exception_is_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with TestClient(make_app(), raise_server_exceptions=False) as client:
        r = await client.get("/boom")
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    assert "kaboom" not in r.text
    assert any("Exception in HTTP handler boom" in rec.message for rec in caplog.records)
    assert any(rec.exc_info for rec in caplog.records)


async def test_a_return_json_cannot_hold_is_500_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.http("/set")
    async def returns_a_set(request: Request) -> dict[str, object]:
        return {"ids": {1, 2}}

    async with TestClient(app, raise_server_exceptions=False) as client:
        r = await client.get("/set")
    assert (r.status_code, r.text) == (500, "Internal Server Error")
    assert any("Exception in HTTP handler returns_a_set" in rec.message for rec in caplog.records)


async def test_debug_shows_traceback() -> None:
    async with TestClient(make_app(debug=True), raise_server_exceptions=False) as client:
        r = await client.get("/boom")
    assert r.status_code == 500
    assert "RuntimeError: kaboom" in r.text


async def test_invalid_json_body_is_400() -> None:
    async with TestClient(make_app()) as client:
        r = await client.post(
            "/items/1", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400


async def test_cookies() -> None:
    async with TestClient(make_app()) as client:
        r = await client.get("/cookie", cookies={"session": "abc"})
        assert r.json() == {"session": "abc"}


async def test_sync_handler_runs_off_the_loop() -> None:
    app = App()
    loop_thread: list[int] = []

    @app.http("/sync")
    def blocking(request: Request) -> dict[str, bool]:
        return {"off_loop": threading.get_ident() != loop_thread[0]}

    async with TestClient(app) as client:
        loop_thread.append(threading.get_ident())
        r = await client.get("/sync")
        assert r.json() == {"off_loop": True}


async def test_lifespan_hooks_run_in_order() -> None:
    app = App()
    calls: list[str] = []

    @app.on_startup
    async def start() -> None:
        calls.append("start")

    @app.on_startup
    def start_sync() -> None:
        calls.append("start-sync")

    @app.on_shutdown
    async def stop() -> None:
        calls.append("stop")

    async with TestClient(app):
        assert calls == ["start", "start-sync"]
    assert calls == ["start", "start-sync", "stop"]


async def test_startup_failure_is_reported() -> None:
    app = App()

    @app.on_startup
    async def start() -> None:
        raise ValueError("database unreachable")

    with pytest.raises(Exception, match="database unreachable"):
        async with TestClient(app):
            pass


async def test_registration_after_serving_is_refused() -> None:
    app = make_app()
    async with TestClient(app) as client:
        await client.get("/health")
        with pytest.raises(RegistrationClosed, match="after the app has started serving"):
            app.add_http_route("/late", lambda request: "late")
        with pytest.raises(RegistrationClosed):

            @app.websocket("/late-ws")
            async def late(ws: Any) -> None:
                pass


async def raw_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    body = f"{scope['root_path']}|{scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_mount_and_fallback() -> None:
    app = App(fallback=raw_asgi)
    app.mount("/legacy", raw_asgi)

    @app.http("/")
    async def home(request: Request) -> str:
        return "home"

    async with TestClient(app) as client:
        assert (await client.get("/")).text == "home"
        assert (await client.get("/legacy/page")).text == "/legacy|/legacy/page"
        assert (await client.get("/other")).text == "|/other"


async def test_static(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("static hello")
    app = App()
    app.static("/static", str(tmp_path))
    async with TestClient(app) as client:
        r = await client.get("/static/hello.txt")
        assert (r.status_code, r.text) == (200, "static hello")
        assert (await client.get("/static/../secret")).status_code == 404


class HeaderMiddleware:
    seen: list[str] = []

    def __init__(self, app: Any, name: str) -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(self.name)

        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start":
                header = f"x-{self.name}".encode()
                message["headers"] = [*message["headers"], (header, b"1")]
            await send(message)

        await self.app(scope, receive, wrapped)


async def test_middleware_order() -> None:
    app = make_app()
    HeaderMiddleware.seen = []
    app.add_middleware(HeaderMiddleware, name="inner")
    app.add_middleware(HeaderMiddleware, name="outer")
    async with TestClient(app) as client:
        r = await client.get("/health")
    assert HeaderMiddleware.seen == ["outer", "inner"]  # last added is outermost
    assert r.headers["x-inner"] == r.headers["x-outer"] == "1"


async def test_json_response_and_url_path_for() -> None:
    app = App()

    @app.http("/users/{name}", name="user")
    async def user(request: Request, name: str) -> JSONResponse:
        return JSONResponse({"name": name, "url": app.url_path_for("user", name=name)})

    async with TestClient(app) as client:
        assert (await client.get("/users/ann")).json() == {"name": "ann", "url": "/users/ann"}


async def test_concurrent_requests() -> None:
    app = App()
    gate = asyncio.Event()

    @app.http("/wait")
    async def wait(request: Request) -> str:
        await gate.wait()
        return "waited"

    @app.http("/open")
    async def open_(request: Request) -> str:
        gate.set()
        return "opened"

    async with TestClient(app) as client:
        waiting = asyncio.ensure_future(client.get("/wait"))
        assert (await client.get("/open")).text == "opened"
        assert (await waiting).text == "waited"


async def test_a_handler_exception_reaches_the_test_by_default() -> None:
    app = App(layer=None)

    @app.http("/boom")
    async def boom(request: Request) -> str:
        raise ZeroDivisionError("boom in the handler")

    @app.websocket("/ws")
    async def ws_boom(ws: Any) -> None:
        await ws.accept()
        raise LookupError("boom in the socket handler")

    async with TestClient(app) as client:
        with pytest.raises(ZeroDivisionError, match="boom in the handler"):
            await client.get("/boom")
        with pytest.raises(LookupError, match="boom in the socket handler"):
            async with client.websocket("/ws") as ws:
                await ws.receive_text()
    async with TestClient(app, raise_server_exceptions=False) as client:
        r = await client.get("/boom")
        assert (r.status_code, r.text) == (500, "Internal Server Error")
