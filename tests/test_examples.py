"""Every example runs under the test client, so none of them rots."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from chanlite import WebSocketDisconnect
from chanlite.importer import import_from_string
from chanlite.testing import TestClient
from chanlite.testing.client import WebSocketRejected


async def test_echo_example() -> None:
    app = import_from_string("examples/echo.py:app")
    async with TestClient(app) as client:
        async with client.websocket("/ws") as ws:
            await ws.send_text("ping")
            assert await ws.receive_text() == "ping"


async def test_chat_example_group_chat() -> None:
    app = import_from_string("examples/chat/app.py:app")
    async with TestClient(app) as client:
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/room/lobby")).status_code == 200
        async with client.websocket("/ws/lobby?nick=ann") as ann:
            welcome = await ann.receive_json()
            assert (welcome["kind"], welcome["nick"], welcome["room"], welcome["people"]) == (
                "welcome",
                "ann",
                "lobby",
                [],
            )
            assert await ann.receive_json() == {"kind": "joined", "nick": "ann", "room": "lobby"}
            async with client.websocket("/ws/lobby?nick=bob") as bob:
                welcome = await bob.receive_json()
                assert (welcome["kind"], welcome["people"]) == ("welcome", ["ann"])
                assert (await bob.receive_json())["nick"] == "bob"
                assert (await ann.receive_json())["nick"] == "bob"
                await bob.send_json({"text": "hello ann"})
                for ws in (ann, bob):
                    got = await ws.receive_json()
                    assert (got["kind"], got["nick"], got["text"], got["offset"]) == (
                        "message",
                        "bob",
                        "hello ann",
                        1,
                    )
                await ann.send_json({"kind": "typing"})
                assert await bob.receive_json() == {"kind": "typing", "nick": "ann"}
                await ann.receive_json()
            assert await ann.receive_json() == {"kind": "left", "nick": "bob", "room": "lobby"}


async def test_chat_example_history_and_presence() -> None:
    """A latecomer sees the last lines; a page back from an outage gets what it missed;
    a second tab of a nickname is not a second person; a bad position is refused."""
    app = import_from_string("examples/chat/app.py:app")
    async with TestClient(app) as client:
        async with client.websocket("/ws/hist?nick=ann") as ann:
            await ann.receive_json()  # welcome
            await ann.receive_json()  # ann joined
            for n in range(3):
                await ann.send_json({"text": f"line {n}"})
                line = await ann.receive_json()
        async with client.websocket("/ws/hist?nick=cat") as cat:
            assert (await cat.receive_json())["people"] == []
            lines = [await cat.receive_json() for _ in range(3)]
            assert [m["text"] for m in lines] == ["line 0", "line 1", "line 2"]
            assert (await cat.receive_json())["kind"] == "joined"
        await app.group_send("room.hist", {"type": "chat.message", "text": "while away"})
        await app.group_send("room.hist", {"type": "chat.notice", "text": "and a notice"})
        back = f"/ws/hist?nick=ann&offset={line['offset']}&epoch={line['epoch']}"
        async with client.websocket(back) as ann, client.websocket(back) as tab2:
            for ws in (ann, tab2):
                assert (await ws.receive_json())["kind"] == "welcome"
                assert (await ws.receive_json())["text"] == "while away"
                assert (await ws.receive_json())["text"] == "and a notice"
            assert await ann.receive_json() == {"kind": "joined", "nick": "ann", "room": "hist"}
            await tab2.send_json({"text": "from tab 2"})
            # ann's second tab did not announce a second ann: the next frame is the line.
            assert (await ann.receive_json())["text"] == "from tab 2"
            assert list(await app.presence("room.hist")) == ["ann"]
        lost = f"/ws/hist?nick=bob&offset=1&epoch={'another-server'}"
        async with client.websocket(lost) as bob:
            await bob.receive_json()
            gap = await bob.receive_json()
            assert (gap["kind"], gap["reason"], gap["offset"]) == ("gap", "epoch", 6)
            assert len([await bob.receive_json() for _ in range(6)]) == 6  # the last ones
        with pytest.raises(WebSocketRejected):
            async with client.websocket("/ws/hist?nick=eve&offset=x&epoch=e"):
                pass
        async with client.websocket("/ws/hist?nick=eve&offset=-1&epoch=e") as eve:
            await eve.receive_json()
            with pytest.raises(WebSocketDisconnect):
                await eve.receive_json()
            assert eve.close_code == 4400


async def test_chat_example_events_from_other_programs() -> None:
    """What `chanlite send` delivers to a room: chat lines, notices and raw text frames."""
    app = import_from_string("examples/chat/app.py:app")
    async with TestClient(app) as client:
        assert (await client.get("/room/no%20such")).status_code == 404
        async with client.websocket("/ws/lobby?nick=ann") as ann:
            assert (await ann.receive_json())["kind"] == "welcome"
            assert (await ann.receive_json())["kind"] == "joined"
            await app.group_send("room.lobby", {"type": "chat.message", "text": " hi "})
            got = await ann.receive_json()
            assert (got["kind"], got["nick"], got["text"]) == ("message", "server", "hi")
            await app.group_send("room.lobby", {"type": "chat.message", "text": "x", "nick": "op"})
            assert (await ann.receive_json())["nick"] == "op"
            await app.group_send("room.lobby", {"type": "chat.notice", "text": "restart at 5"})
            notice = await ann.receive_json()
            assert (notice["kind"], notice["text"], notice["offset"]) == (
                "notice",
                "restart at 5",
                3,
            )
            await app.broadcast("room.lobby", text="plain words")
            assert await ann.receive_text() == "plain words"


async def test_chat_example_rejects_bad_room_name(caplog: pytest.LogCaptureFixture) -> None:
    app = import_from_string("examples/chat/app.py:app")
    caplog.set_level(logging.INFO)
    async with TestClient(app) as client:
        with pytest.raises(WebSocketRejected) as info:
            async with client.websocket("/ws/bad%20room"):
                pass
    assert info.value.status_code == 403
    assert any("room 'bad room'" in rec.getMessage() for rec in caplog.records)
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]


async def test_chat_example_answers_frames_it_does_not_take(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Input the page never sends is refused with a reason, never a traceback."""
    app = import_from_string("examples/chat/app.py:app")
    caplog.set_level(logging.INFO)
    async with TestClient(app) as client:
        async with client.websocket("/ws/lobby?nick=eve") as eve:
            assert (await eve.receive_json())["kind"] == "welcome"
            assert (await eve.receive_json())["kind"] == "joined"
            for frame in ([1, 2], "text", None, {"nick": "x"}, {"text": 5}, {"text": ["a"]}):
                await eve.send_json(frame)
                got = await eve.receive_json()
                assert got["kind"] == "error" and '"text"' in got["text"], (frame, got)
            await eve.send_json({"text": "still here"})
            assert (await eve.receive_json())["text"] == "still here"
            await eve.send_text("{not json")
            with pytest.raises(WebSocketDisconnect):
                await eve.receive_json()
            assert eve.close_code == 1007
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert sum("Refused a frame" in rec.getMessage() for rec in caplog.records) == 6


async def test_ticker_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKER_INTERVAL", "0.05")
    app = import_from_string("examples/ticker.py:app")
    import ticker  # the module loaded from examples/ticker.py

    monkeypatch.setattr(ticker, "INTERVAL", 0.05)
    async with TestClient(app) as client:
        async with client.websocket("/ticks") as ws:
            first = (await ws.receive_json(timeout=5))["tick"]
            second = (await ws.receive_json(timeout=5))["tick"]
            assert second == first + 1


async def test_sse_example() -> None:
    app = import_from_string("examples/sse.py:app")
    async with TestClient(app) as client:
        async with client.stream("GET", "/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            chunks = response.aiter_bytes()
            assert b"connected" in await asyncio.wait_for(chunks.__anext__(), 5)
            r = await client.post("/publish", content=b"breaking")
            assert r.json() == {"published": True}
            data = await asyncio.wait_for(chunks.__anext__(), 5)
            assert data == b"data: " + json.dumps("breaking").encode() + b"\n\n"


async def test_topics_chat_example_under_the_test_client() -> None:
    """The topics chat's socket: a join tracks the nick and replays the room's history."""
    app = import_from_string("examples/topics_chat/app.py:app")
    async with TestClient(app) as client:
        assert "room" in (await client.get("/")).text
        async with client.websocket("/socket/websocket?vsn=2.0.0&nick=ann") as ws:
            await ws.send_text('["1","1","room:t","phx_join",{"last":50}]')
            join = json.loads(await ws.receive_text(timeout=5))
            assert join[4]["status"] == "ok"
            assert join[4]["response"]["history"]["recovered"] is True
            state = json.loads(await ws.receive_text(timeout=5))
            assert state[3] == "presence_state" and list(state[4]) == ["ann"]
            await ws.send_text('["1","2","room:t","say",{"text":" hi "}]')
            seen = [json.loads(await ws.receive_text(timeout=5)) for _ in range(3)]
            said = [m for m in seen if m[3] == "message"]
            assert said[0][4]["text"] == "hi" and said[0][1].startswith("1:")
            await ws.send_text('["1","3","room:t","say",{"text":""}]')
            while (reply := json.loads(await ws.receive_text(timeout=5)))[1] != "3":
                pass
            assert reply[4]["status"] == "error"
        async with client.websocket("/socket/websocket?vsn=2.0.0&nick=bob") as ws:
            await ws.send_text('["1","1","room:t","phx_join",{"last":50}]')
            await ws.receive_text(timeout=5)  # the join reply
            replayed = json.loads(await ws.receive_text(timeout=5))
            assert replayed[3] == "message" and replayed[4]["text"] == "hi"
