"""The socket endpoint under the test client: limits and bad input are precise refusals."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from chanlite import App
from chanlite.exceptions import RegistrationClosed, WebSocketDisconnect
from chanlite.testing import TestClient
from chanlite.testing.websocket import WebSocketRejected
from chanlite.topics import Channel, Connection, Limits, Refused


def make_app(**limits: Any) -> App:
    app = App()

    async def connect(conn: Connection, params: dict[str, str]) -> bool:
        conn.assigns["user"] = params.get("user")
        return params.get("token") != "bad"

    socket = app.socket("/socket", connect=connect, limits=Limits(**limits))
    room = socket.topic("room:{name}")

    @room.on("echo")
    async def echo(channel: Channel, name: str, payload: Any) -> Any:
        return payload

    return app


def frame(*parts: Any) -> str:
    return json.dumps(list(parts))


async def reply(ws: Any) -> list[Any]:
    return list(json.loads(await ws.receive_text(timeout=5)))


async def test_join_push_reply_over_the_test_client() -> None:
    async with TestClient(make_app()) as client:
        async with client.websocket("/socket/websocket?vsn=2.0.0&user=ann") as ws:
            await ws.send_text(frame("1", "1", "room:a", "phx_join", {}))
            assert await reply(ws) == [
                "1",
                "1",
                "room:a",
                "phx_reply",
                {"status": "ok", "response": {}},
            ]
            await ws.send_text(frame("1", "2", "room:a", "echo", {"x": [1]}))
            assert await reply(ws) == [
                "1", "2", "room:a", "phx_reply", {"status": "ok", "response": {"x": [1]}}
            ]  # fmt: skip


@pytest.mark.parametrize("query", ["", "vsn=1.0.0", "vsn=2.0.0&token=bad"])
async def test_refused_handshakes_are_403(query: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "chanlite.topics")
    async with TestClient(make_app()) as client:
        with pytest.raises(WebSocketRejected) as info:
            async with client.websocket(f"/socket/websocket?{query}"):
                pass
    assert info.value.status_code == 403
    assert "vsn" in caplog.text or "connect refused" in caplog.text


async def test_push_before_join_is_answered_on_its_topic() -> None:
    async with TestClient(make_app()) as client:
        async with client.websocket("/socket/websocket?vsn=2.0.0") as ws:
            await ws.send_text(frame(None, "5", "room:a", "echo", {}))
            assert await reply(ws) == [
                None, "5", "room:a", "phx_reply",
                {"status": "error", "response": {"reason": "unmatched topic"}},
            ]  # fmt: skip
            # the connection is still fine
            await ws.send_text(frame(None, "6", "phoenix", "heartbeat", {}))
            assert (await reply(ws))[4] == {"status": "ok", "response": {}}


@pytest.mark.parametrize(
    ("message", "code", "logged"),
    [
        ("not json", 1007, "message is not JSON"),
        ('{"a":1}', 1007, "must be a JSON array"),
        ('["1","1","room:a","phx_join"]', 1007, "must have 5 elements"),
        (b"\x05\x00\x00\x00\x00", 1007, "a client may only send pushes"),
        ("x" * 5000, 1009, "a message of 5000 bytes (the limit is 4096)"),
    ],
)
async def test_unreadable_messages_close_with_a_precise_code(
    message: str | bytes, code: int, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "chanlite.topics")
    async with TestClient(make_app(max_message=4096)) as client:
        async with client.websocket("/socket/websocket?vsn=2.0.0") as ws:
            if isinstance(message, str):
                await ws.send_text(message)
            else:
                await ws.send_bytes(message)
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_text(timeout=5)
    assert info.value.code == code
    assert logged in caplog.text
    assert "Traceback" not in caplog.text


async def test_topic_and_join_rate_limits() -> None:
    async with TestClient(make_app(max_topics=2, join_rate=1.0, join_burst=3)) as client:
        async with client.websocket("/socket/websocket?vsn=2.0.0") as ws:
            for n in (1, 2):
                await ws.send_text(frame(str(n), str(n), f"room:{n}", "phx_join", {}))
                assert (await reply(ws))[4]["status"] == "ok"
            await ws.send_text(frame("3", "3", "room:3", "phx_join", {}))
            assert (await reply(ws))[4] == {
                "status": "error",
                "response": {"reason": "too many channels joined"},
            }
            await ws.send_text(frame("4", "4", "room:4", "phx_join", {}))
            assert (await reply(ws))[4] == {
                "status": "error",
                "response": {"reason": "join rate exceeded"},
            }


async def test_unknown_event_and_reserved_event_are_refused_on_their_topic() -> None:
    async with TestClient(make_app()) as client:
        async with client.websocket("/socket/websocket?vsn=2.0.0") as ws:
            await ws.send_text(frame("1", "1", "room:a", "phx_join", {}))
            await reply(ws)
            await ws.send_text(frame("1", "2", "room:a", "nope", {}))
            assert (await reply(ws))[4] == {
                "status": "error",
                "response": {"reason": "unhandled event"},
            }
            await ws.send_text(frame("1", "3", "room:a", "phx_close", {}))
            assert (await reply(ws))[4]["status"] == "error"
            await ws.send_text(frame("1", "4", "room:a", "echo", 7))
            assert (await reply(ws))[4] == {"status": "ok", "response": 7}


async def test_socket_registration_is_closed_once_serving() -> None:
    app = make_app()
    async with TestClient(app) as client:
        await client.get("/")
        with pytest.raises(RegistrationClosed):
            app.socket("/other")


async def test_a_push_from_the_join_handler_follows_the_join_reply() -> None:
    app = App()
    socket = app.socket("/socket")
    lobby = socket.topic("lobby:{name}")

    @lobby.join
    async def join(channel: Channel, name: str, params: dict[str, Any]) -> dict[str, Any]:
        await channel.push("welcome", {"to": name})
        if name == "closed":
            raise Refused("closed")
        return {"joined": name}

    async with TestClient(app) as client:
        async with client.websocket("/socket/websocket?vsn=2.0.0") as ws:
            await ws.send_text(frame("1", "1", "lobby:closed", "phx_join", {}))
            assert await reply(ws) == [
                "1", "1", "lobby:closed", "phx_reply",
                {"status": "error", "response": {"reason": "closed"}},
            ]  # fmt: skip
            await ws.send_text(frame("2", "2", "lobby:a", "phx_join", {}))
            assert await reply(ws) == [
                "2", "2", "lobby:a", "phx_reply",
                {"status": "ok", "response": {"joined": "a"}},
            ]  # fmt: skip
            # the refused join's push never came: this is the accepted one's
            assert await reply(ws) == ["2", None, "lobby:a", "welcome", {"to": "a"}]


async def test_refusals_that_keep_the_socket_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "chanlite.topics")
    async with TestClient(make_app(max_topics=1, join_rate=1.0, join_burst=3)) as client:
        async with client.websocket("/socket/websocket?vsn=2.0.0") as ws:
            await ws.send_text(frame(None, "1", "room:a", "echo", {}))  # before its join
            await reply(ws)
            await ws.send_text(frame("2", "2", "nowhere:a", "phx_join", {}))  # unknown topic
            await reply(ws)
            await ws.send_text(frame("3", "3", "room:a", "phx_join", {}))
            await reply(ws)
            await ws.send_text(frame("3", "4", "room:a", "nope", {}))  # unknown event
            await reply(ws)
            await ws.send_text(frame("5", "5", "room:b", "phx_join", {}))  # over max_topics
            await reply(ws)
            await ws.send_text(frame("6", "6", "room:c", "phx_join", {}))  # over the join rate
            assert (await reply(ws))[4]["response"] == {"reason": "join rate exceeded"}
    logged = caplog.text
    assert "'nowhere:a'" in logged and "refused" in logged
    assert "No handler for 'nope' on 'room:a'" in logged
    for detail in (
        "'echo' to a topic that is not joined",
        "join past the limit of 1 topics",
        "join over the rate limit (1.0/s)",
    ):
        assert detail in logged, detail
    assert "Traceback" not in logged
