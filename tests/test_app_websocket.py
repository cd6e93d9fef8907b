from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from chanlite import App, WebSocket, WebSocketDisconnect
from chanlite.exceptions import WebSocketStateError
from chanlite.testing import TestClient
from chanlite.testing.client import WebSocketRejected


def chat_app() -> App:
    app = App(layer="memory://")

    @app.websocket("/ws/chat/{room}")
    async def chat(ws: WebSocket, room: str) -> None:
        await ws.accept()
        await ws.join(f"chat.{room}")
        await ws.send_json({"joined": room, "channel": ws.channel_name})
        async for msg in ws.iter_json():
            await ws.group_send(f"chat.{room}", {"type": "chat.message", "text": msg["text"]})

    @chat.on("chat.message")
    async def chat_message(ws: WebSocket, event: dict[str, Any]) -> None:
        await ws.send_json({"text": event["text"]})

    @app.websocket("/ws/echo")
    async def echo(ws: WebSocket) -> None:
        await ws.accept(
            subprotocol=ws.scope["subprotocols"][0] if ws.scope["subprotocols"] else None
        )
        async for text in ws.iter_text():
            await ws.send_text(text)

    return app


async def test_echo_and_subprotocol() -> None:
    async with TestClient(chat_app()) as client:
        async with client.websocket("/ws/echo", subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.accepted_subprotocol == "chat.v1"
            await ws.send_text("hello")
            assert await ws.receive_text() == "hello"


async def test_group_chat_between_connections() -> None:
    async with TestClient(chat_app()) as client:
        async with client.websocket("/ws/chat/lobby") as a, client.websocket("/ws/chat/lobby") as b:
            assert (await a.receive_json())["joined"] == "lobby"
            assert (await b.receive_json())["joined"] == "lobby"
            await a.send_json({"text": "hi all"})
            assert await a.receive_json() == {"text": "hi all"}
            assert await b.receive_json() == {"text": "hi all"}


async def test_rooms_are_separate() -> None:
    async with TestClient(chat_app()) as client:
        async with client.websocket("/ws/chat/a") as a, client.websocket("/ws/chat/b") as b:
            await a.receive_json()
            await b.receive_json()
            await a.send_json({"text": "only a"})
            assert await a.receive_json() == {"text": "only a"}
            with pytest.raises(asyncio.TimeoutError):
                await b.receive_json(timeout=0.2)


async def test_membership_dropped_on_disconnect() -> None:
    app = chat_app()
    async with TestClient(app) as client:
        async with client.websocket("/ws/chat/gone") as ws:
            channel = (await ws.receive_json())["channel"]
        # After the socket closed, the group no longer lists the channel.
        for _ in range(50):
            if channel not in app.hub.connections:
                break
            await asyncio.sleep(0.01)
        assert channel not in app.hub.connections
        members = app.layer._groups.get("chat.gone", {})  # type: ignore[attr-defined]
        assert channel not in members


async def test_direct_send_to_channel_name() -> None:
    app = chat_app()
    async with TestClient(app) as client:
        async with client.websocket("/ws/chat/x") as ws:
            channel = (await ws.receive_json())["channel"]
            await app.send(channel, {"type": "chat.message", "text": "just you"})
            assert await ws.receive_json() == {"text": "just you"}


async def test_unknown_path_is_rejected_with_403() -> None:
    async with TestClient(chat_app()) as client:
        with pytest.raises(WebSocketRejected) as info:
            async with client.websocket("/ws/nope"):
                pass
        assert info.value.status_code == 403


async def test_handler_exception_closes_1011(caplog: pytest.LogCaptureFixture) -> None:
    app = App()

    @app.websocket("/ws")
    async def broken(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        raise RuntimeError("handler bug")

    async with TestClient(app, raise_server_exceptions=False) as client:
        async with client.websocket("/ws") as ws:
            await ws.send_text("go")
            with pytest.raises(WebSocketDisconnect):
                await ws.receive_text()
            assert ws.close_code == 1011
    assert any("handler bug" in str(rec.exc_info) for rec in caplog.records if rec.exc_info)


async def test_handler_that_returns_closes_1000() -> None:
    app = App()

    @app.websocket("/ws")
    async def short(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("bye")

    async with TestClient(app) as client:
        async with client.websocket("/ws") as ws:
            assert await ws.receive_text() == "bye"
            with pytest.raises(WebSocketDisconnect):
                await ws.receive_text()
            assert ws.close_code == 1000


async def test_handler_closes_with_code_and_reason() -> None:
    app = App()

    @app.websocket("/ws")
    async def closer(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close(4001, "go away")
        assert ws.close_code == 4001

    async with TestClient(app) as client:
        async with client.websocket("/ws") as ws:
            with pytest.raises(WebSocketDisconnect):
                await ws.receive_text()
            assert (ws.close_code, ws.close_reason) == (4001, "go away")


async def test_state_machine_errors_say_what_to_do() -> None:
    app = App()
    errors: list[str] = []

    @app.websocket("/ws")
    async def misuse(ws: WebSocket) -> None:
        try:
            await ws.send_text("too early")
        except WebSocketStateError as exc:
            errors.append(str(exc))
        await ws.accept()
        try:
            await ws.accept()
        except WebSocketStateError as exc:
            errors.append(str(exc))
        await ws.close()
        try:
            await ws.send_text("too late")
        except WebSocketStateError as exc:
            errors.append(str(exc))

    async with TestClient(app) as client:
        async with client.websocket("/ws") as ws:
            with pytest.raises(WebSocketDisconnect):
                await ws.receive_text()
    assert "call await ws.accept() first" in errors[0]
    assert "accept only once" in errors[1]
    assert "the connection is closed" in errors[2]


async def test_connection_properties() -> None:
    app = App()
    seen: dict[str, Any] = {}

    @app.websocket("/ws/{id:int}")
    async def props(ws: WebSocket, id: int) -> None:
        seen.update(
            id=id,
            path_params=ws.path_params,
            query=ws.query_params.get("token"),
            header=ws.headers.get("x-custom"),
            cookies=ws.cookies,
            client=ws.client,
        )
        ws.state.user = "ann"
        seen["state"] = ws.state.user
        await ws.accept()
        await ws.close()

    async with TestClient(app) as client:
        async with client.websocket(
            "/ws/7?token=t0k", headers={"x-custom": "yes", "cookie": "a=1; b=2"}
        ) as ws:
            with pytest.raises(WebSocketDisconnect):
                await ws.receive_text()
    assert seen["id"] == 7
    assert seen["path_params"] == {"id": 7}
    assert (seen["query"], seen["header"]) == ("t0k", "yes")
    assert seen["cookies"] == {"a": "1", "b": "2"}
    assert seen["client"] is not None
    assert seen["state"] == "ann"


async def test_receive_bytes_and_json_binary() -> None:
    app = App()

    @app.websocket("/ws")
    async def binary(ws: WebSocket) -> None:
        await ws.accept()
        data = await ws.receive_bytes()
        await ws.send_bytes(data[::-1])
        obj = await ws.receive_json()
        await ws.send_json(obj, mode="binary")

    async with TestClient(app) as client:
        async with client.websocket("/ws") as ws:
            await ws.send_bytes(b"abc")
            assert await ws.receive_bytes() == b"cba"
            await ws.send_json({"k": [1, 2]})
            assert await ws.receive_bytes() == b'{"k":[1,2]}'


async def test_iterators_end_on_disconnect() -> None:
    app = App()
    finished = asyncio.Event()
    received: list[str] = []

    @app.websocket("/ws")
    async def collect(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            received.append(text)
        finished.set()

    async with TestClient(app) as client:
        async with client.websocket("/ws") as ws:
            await ws.send_text("one")
            await ws.send_text("two")
            await ws.close()
        await asyncio.wait_for(finished.wait(), 5)
    assert received == ["one", "two"]


async def test_reject_before_accept() -> None:
    app = App()

    @app.websocket("/ws")
    async def picky(ws: WebSocket) -> None:
        await ws.close()

    async with TestClient(app) as client:
        with pytest.raises(WebSocketRejected) as info:
            async with client.websocket("/ws"):
                pass
        assert info.value.status_code == 403


def test_websocket_handler_must_be_async() -> None:
    app = App()
    with pytest.raises(TypeError, match="must be an async def"):

        @app.websocket("/ws")
        def not_async(ws: WebSocket) -> None:  # type: ignore[arg-type, type-var]
            pass


async def test_iter_json_closes_1007_on_invalid_json() -> None:
    app = App()
    got: list[Any] = []

    @app.websocket("/ws")
    async def strict(ws: WebSocket) -> None:
        await ws.accept()
        async for obj in ws.iter_json():
            got.append(obj)

    async with TestClient(app) as client:
        async with client.websocket("/ws") as ws:
            await ws.send_json({"ok": 1})
            await ws.send_text("{broken")
            with pytest.raises(WebSocketDisconnect):
                await ws.receive_text()
            assert ws.close_code == 1007
    assert got == [{"ok": 1}]


async def test_iter_loops_end_quietly_at_disconnect_and_refuse_the_other_frame_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()
    seen: list[Any] = []

    @app.websocket("/ws/bytes")
    async def binary(ws: WebSocket) -> None:
        await ws.accept()
        async for data in ws.iter_bytes():
            seen.append(data)
        seen.append(("ended", ws.close_code))

    @app.websocket("/ws/text")
    async def text(ws: WebSocket) -> None:
        await ws.accept()
        async for item in ws.iter_text():
            seen.append(item)
        seen.append(("text ended", ws.close_code))

    caplog.set_level(logging.INFO, logger="chanlite")
    async with TestClient(app) as client:
        async with client.websocket("/ws/bytes") as ws:
            await ws.send_bytes(b"\x00\x01")
            await ws.send_bytes(b"")
            await ws.close(4001)
        async with client.websocket("/ws/text") as ws:
            await ws.send_text("a")
            await ws.send_bytes(b"b")  # the client's mistake: a 1003 close, not a crash
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_text()
            assert info.value.code == 1003
        async with client.websocket("/ws/bytes") as ws:
            await ws.send_text("not bytes")
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_bytes()
            assert info.value.code == 1003
    assert seen == [
        b"\x00\x01",
        b"",
        ("ended", 4001),
        "a",
        ("text ended", 1003),
        ("ended", 1003),
    ]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    refusals = [rec for rec in caplog.records if "with 1003" in rec.getMessage()]
    assert [rec.levelno for rec in refusals] == [logging.INFO, logging.INFO]


@pytest.mark.parametrize("wrong", ["text", "bytes"])
async def test_receive_text_or_bytes_of_the_wrong_kind_closes_1003(
    wrong: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()
    outcome: list[Any] = []

    @app.websocket("/ws")
    async def strict(ws: WebSocket) -> None:
        await ws.accept()
        try:
            if wrong == "bytes":
                await ws.receive_text()
            else:
                await ws.receive_bytes()
        except WebSocketDisconnect as exc:
            outcome.append(exc.code)
            raise

    caplog.set_level(logging.INFO, logger="chanlite")
    async with TestClient(app) as client:
        async with client.websocket("/ws") as ws:
            if wrong == "bytes":
                await ws.send_bytes(b"\x00")
            else:
                await ws.send_text("x")
            with pytest.raises(WebSocketDisconnect):
                await ws.receive_text()
            assert ws.close_code == 1003
    assert outcome == [1003]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert any(rec.levelno == logging.INFO and "1003" in rec.getMessage() for rec in caplog.records)


async def test_receive_json_invalid_raises_value_error() -> None:
    app = App()
    errors: list[str] = []

    @app.websocket("/ws")
    async def lenient(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.receive_json()
        except ValueError as exc:
            errors.append(type(exc).__name__)
        await ws.send_text("still here")

    async with TestClient(app) as client:
        async with client.websocket("/ws") as ws:
            await ws.send_text("nope")
            assert await ws.receive_text() == "still here"
    assert errors == ["JSONDecodeError"]


async def test_send_to_a_gone_client_ends_the_handler_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()
    ended = asyncio.Event()
    codes: list[int | None] = []

    @app.websocket("/ws")
    async def chatty(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send_text("tick")
                await asyncio.sleep(0.01)
        finally:
            codes.append(ws.close_code)
            ended.set()

    async with TestClient(app) as client:
        async with client.websocket("/ws") as ws:
            assert await ws.receive_text() == "tick"
            await ws.close()
        await asyncio.wait_for(ended.wait(), 5)
    assert codes and codes[0] is not None
    assert not [rec for rec in caplog.records if rec.levelname == "ERROR"]


async def test_frame_writer_is_cached_at_accept_and_cleared_on_close() -> None:
    app = App()
    states: list[object] = []

    def writer(frame: bytes) -> bool:
        return True

    @app.websocket("/ws")
    async def probe(ws: WebSocket) -> None:
        ws.scope["extensions"] = {"chanlite.frames": {"send_frame": writer}}
        states.append(ws.frame_writer)
        await ws.accept()
        states.append(ws.frame_writer)
        await ws.close()
        states.append(ws.frame_writer)

    async with TestClient(app) as client:
        async with client.websocket("/ws") as ws:
            with pytest.raises(WebSocketDisconnect):
                await ws.receive_text()
    assert states == [None, writer, None]


async def test_closing_after_the_client_left_is_quiet() -> None:
    # The handler returns after the client has gone: the app's closing 1000 meets a closed
    # transport, which is routine and must not surface as an app error.
    app = App()
    returned = asyncio.Event()

    @app.websocket("/ws")
    async def last_word(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        await asyncio.sleep(0.05)  # the client leaves meanwhile
        returned.set()

    async with TestClient(app) as client:
        async with client.websocket("/ws") as ws:
            await ws.send_text("bye")
        await asyncio.wait_for(returned.wait(), 5)


async def test_a_connection_releases_its_channel_and_groups_itself() -> None:
    """The WebSocket runs its handler and cleans up after it; the App only routes."""
    app = chat_app()
    seen: dict[str, Any] = {}

    @app.websocket("/ws/probe")
    async def probe(ws: WebSocket) -> None:
        await ws.accept()
        await ws.join("probe")
        seen["channel"] = ws.channel_name
        seen["app"] = ws.app
        seen["hub"] = ws.hub
        await ws.aclose()  # closes (1000) and releases; run_handler's call is then a no-op
        seen["after"] = (ws.close_code, ws.groups, ws.channel_name in app.hub.connections)

    async with TestClient(app) as client:
        async with client.websocket("/ws/probe") as ws:
            with pytest.raises(WebSocketDisconnect):
                await ws.receive_text()
            assert ws.close_code == 1000
    assert seen["app"] is app and seen["hub"] is app.hub
    assert seen["after"] == (1000, frozenset(), False)
    assert "probe" not in app.layer._groups  # type: ignore[attr-defined]


async def test_the_old_connection_hooks_warn() -> None:
    app = chat_app()
    scope = {"type": "websocket", "path": "/", "headers": []}

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        pass

    with pytest.warns(DeprecationWarning, match="hub=app.hub"):
        ws = WebSocket(scope, receive, send, app=app)
    assert ws.hub is app.hub
    with pytest.warns(DeprecationWarning, match="WebSocket.handle_event"):
        await app.handle_event(ws, None, {"type": "chanlite.broadcast", "text": "x"})
    assert app.stats.events_undeliverable == 1  # not connected: counted, not silent


async def test_sending_after_the_client_left_ends_the_handler_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that leaves while its handler is busy (here: between a receive and the
    next send) must not turn into an ERROR traceback: the send raises
    WebSocketDisconnect, which ends the handler like a receive would."""
    from websockets.asyncio.client import connect

    from tests.server.conftest import running

    caplog.set_level(logging.INFO)
    app = App()
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @app.websocket("/ws")
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        with contextlib.suppress(WebSocketDisconnect):  # e.g. a handler saying goodbye
            await ws.receive_text()
        try:
            await ws.send_text("too late")
        except WebSocketDisconnect as exc:
            outcome.set_result(f"disconnect {exc.code}")
            raise

    async with running(app) as server:
        async with connect(f"ws://127.0.0.1:{server.bound_port}/ws"):
            pass  # leaves at once
        assert (await asyncio.wait_for(outcome, 5)).startswith("disconnect ")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
