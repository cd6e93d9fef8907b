"""Other people's ASGI apps end to end: a Django project, and a raw ASGI callable."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from chanlite.types import Receive, Scope, Send
from tests.server.conftest import RawClient, running
from tests.server.procs import Running, start

pytestmark = pytest.mark.timeout(60)


def test_django_project_served_end_to_end(served: list[Running]) -> None:
    running_ = start("tests.server.djangosite.asgi:application", "--no-access-log")
    served.append(running_)
    assert "layer: none   workers: 1" in "".join(running_.banner)
    request = urllib.request.Request(
        running_.url + "/hello/?q=chanlite", data=b"payload", method="POST"
    )
    deadline_error: Exception | None = None
    for _ in range(50):
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                data = json.loads(response.read())
                content_type = response.headers["Content-Type"]
            break
        except OSError as exc:
            deadline_error = exc
            time.sleep(0.1)
    else:
        raise AssertionError(f"Django app never answered: {deadline_error}")
    assert data == {
        "method": "POST",
        "path": "/hello/",
        "query": "chanlite",
        "body": "payload",
        "scheme": "http",
    }
    assert content_type == "application/json"
    # CommonMiddleware's APPEND_SLASH redirect, and Django's 404 with DEBUG off.
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(running_.url + "/nowhere/", timeout=5)
    assert info.value.code == 404
    code, err = running_.stop()
    assert code == 0, err


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    """No framework at all: ASGI 3 by hand, lifespan included."""
    if scope["type"] == "lifespan":
        message = await receive()
        scope["state"]["greeting"] = "hi from lifespan"
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        await send({"type": "lifespan.shutdown.complete"})
        return
    assert scope["type"] == "http"
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"text/plain"), (b"x-raw", b"yes")],
        }
    )
    await send({"type": "http.response.body", "body": scope["state"]["greeting"].encode()})


async def test_raw_asgi_app_with_lifespan_state() -> None:
    async with running(raw_app, lifespan="on") as server:
        client = await RawClient.connect(server.bound_port or 0)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        response = await client.read_response()
        assert response.status == 201
        assert response.headers[b"x-raw"] == b"yes"
        assert response.text == "hi from lifespan"
        await client.close()
