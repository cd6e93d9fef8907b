"""Long-poll sessions reached from another process's app through the SQLite layer.

Two Apps on one SQLite file stand for two workers: the session lives in the one that
created it, and every request made to the other is relayed to it over the layer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chanlite import App
from chanlite.testing import TestClient
from chanlite.topics import Channel, Limits, TopicSocket
from chanlite.topics.longpoll import make_token, read_token

pytestmark = pytest.mark.timeout(60)
PATH = "/socket/longpoll"


def make_app(layer: str) -> tuple[App, TopicSocket]:
    app = App(layer=layer)
    socket = app.socket("/socket")
    room = socket.topic("room:{name}")

    @room.on("echo")
    async def echo(channel: Channel, name: str, payload: Any) -> Any:
        return payload

    return app, socket


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[tuple[Any, Any, TopicSocket]]:
    layer = f"sqlite:///{tmp_path / 'lp.db'}"
    app_a, socket_a = make_app(layer)
    app_b, _ = make_app(layer)
    async with TestClient(app_a) as a, TestClient(app_b) as b:
        yield a, b, socket_a


async def poll(client: Any, token: str) -> dict[str, Any]:
    response = await client.get(PATH, headers={"x-phoenix-longpoll-token": token})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def post(client: Any, token: str, *frames: list[Any]) -> dict[str, Any]:
    body = "\n".join(json.dumps(f) for f in frames)
    response = await client.post(
        PATH,
        content=body.encode(),
        headers={"x-phoenix-longpoll-token": token, "content-type": "application/x-ndjson"},
    )
    result: dict[str, Any] = response.json()
    return result


async def test_a_session_is_reached_from_the_other_worker(workers: Any) -> None:
    a, b, socket_a = workers
    first = (await a.get(PATH, params={"vsn": "2.0.0"})).json()
    assert first["status"] == 410 and first["messages"] == []
    token = first["token"]
    # joined and polled through worker B; the session lives in A
    assert await post(
        b, token, ["1", "1", "room:x", "phx_join", {}], ["1", "2", "room:x", "echo", 5]
    ) == {"status": 200}
    answer = await poll(b, token)
    assert answer["status"] == 200
    assert [json.loads(m)[1] for m in answer["messages"]] == ["1", "2"]
    token = answer["token"]
    # a broadcast while a poll waits on the other worker wakes it
    waiting = asyncio.ensure_future(poll(b, token))
    await asyncio.sleep(0.2)
    await socket_a.broadcast("room:x", "news", {"n": 1})
    answer = await waiting
    assert answer["messages"] == ['[null,null,"room:x","news",{"n":1}]']
    # the response was "lost": polling with the older token gets the same message again
    again = await poll(a, token)
    assert again["messages"] == answer["messages"]
    assert again["token"] == answer["token"]


async def test_a_token_of_no_session_starts_a_new_one(workers: Any) -> None:
    a, b, _ = workers
    token = (await a.get(PATH, params={"vsn": "2.0.0"})).json()["token"]
    channel, _nonce, ack = read_token(token) or ("", "", 0)
    forged = make_token(channel, "0" * 32, ack)
    assert await post(b, forged, ["1", "1", "room:x", "phx_join", {}]) == {"status": 410}
    fresh = (
        await b.get(PATH, params={"vsn": "2.0.0"}, headers={"x-phoenix-longpoll-token": forged})
    ).json()
    assert fresh["status"] == 410 and fresh["token"] != forged
    assert (
        await a.get(PATH, params={"vsn": "2.0.0"}, headers={"x-phoenix-longpoll-token": "garbage"})
    ).json()["status"] == 410


async def test_bad_posts_are_refused_precisely(workers: Any) -> None:
    a, _, _ = workers
    token = (await a.get(PATH, params={"vsn": "2.0.0"})).json()["token"]
    response = await a.post(
        PATH,
        content=b"not base64 at all!\n",
        headers={"x-phoenix-longpoll-token": token, "content-type": "application/x-ndjson"},
    )
    assert response.status_code == 400
    assert "neither a JSON array nor base64" in response.text
    response = await a.options(PATH, headers={"access-control-request-headers": "x-a"})
    assert response.headers["access-control-allow-headers"] == "x-a"


async def test_a_refused_connect_answers_403(tmp_path: Path) -> None:
    app = App()
    app.socket("/socket", connect=lambda conn, params: False)
    async with TestClient(app) as client:
        assert (await client.get(PATH, params={"vsn": "2.0.0"})).json() == {"status": 403}


async def test_an_oversized_message_ends_the_session_and_a_huge_body_is_413(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "chanlite.topics")
    app = App()
    app.socket("/socket", limits=Limits(max_message=4096))
    async with TestClient(app) as client:
        token = (await client.get(PATH, params={"vsn": "2.0.0"})).json()["token"]
        big = [None, "1", "phoenix", "heartbeat", {"pad": "x" * 5000}]
        await post(client, token, big)
        # the session is over: the next poll starts a new one (410 with a new token)
        answer = (
            await client.get(
                PATH, params={"vsn": "2.0.0"}, headers={"x-phoenix-longpoll-token": token}
            )
        ).json()
        assert answer["status"] == 410
        assert answer["token"] != token
        token = answer["token"]
        response = await client.post(
            PATH,
            content=b"x" * (2 * 1024 * 1024),
            headers={"x-phoenix-longpoll-token": token, "content-type": "application/x-ndjson"},
        )
        assert response.status_code == 413
    assert "closed: 1009" in caplog.text
    assert "(the limit is 4096)" in caplog.text
    assert "Traceback" not in caplog.text
