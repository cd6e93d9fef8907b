"""examples/django_chat end to end: real processes, Django's login page, real sockets."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import re
import urllib.parse
import urllib.request
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from tests.django.conftest import EXAMPLE

pytestmark = pytest.mark.timeout(90)

# A separate plain Django process posts the announcement form (no chanlite server in it).
ANNOUNCE = """
from django.contrib.auth.models import User
from django.test import Client
c = Client(SERVER_NAME="localhost")
c.force_login(User.objects.get(username="bob"))
r = c.post("/announce/", {"text": "tea is ready"})
assert r.status_code == 302, r.status_code
"""


def log_in(port: int, username: str) -> str:
    """Log in through Django's login page, as a browser does; the session cookie."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{port}"
    page = opener.open(f"{base}/accounts/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token, page
    fields = {"username": username, "password": "chanlite-demo", "csrfmiddlewaretoken": token[1]}
    body = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(f"{base}/accounts/login/", data=body)
    request.add_header("Referer", f"{base}/accounts/login/")
    opener.open(request, timeout=10).read()
    cookies = {cookie.name: cookie.value for cookie in jar}
    assert "sessionid" in cookies, "login failed"
    return str(cookies["sessionid"])


async def next_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        data = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if data["type"] == kind:
            return dict(data)


async def test_chat_example(chat_site: dict[str, Any]) -> None:
    port = chat_site["port"]
    origin = f"http://127.0.0.1:{port}"
    url = f"ws://127.0.0.1:{port}/ws/chat/lobby"
    alice_cookie = await asyncio.to_thread(log_in, port, "alice")
    bob_cookie = await asyncio.to_thread(log_in, port, "bob")

    def as_user(cookie: str) -> Any:
        return connect(url, origin=origin, additional_headers={"Cookie": f"sessionid={cookie}"})

    with pytest.raises(websockets.InvalidStatus) as info:  # anonymous: no chat
        async with connect(url, origin=origin):
            pass
    assert info.value.response.status_code == 403

    async with as_user(alice_cookie) as alice:
        assert (await next_of(alice, "history"))["messages"] == []
        await alice.send(json.dumps({"type": "message", "text": "hello room"}))
        mine = await next_of(alice, "message")
        assert (mine["user"], mine["text"]) == ("alice", "hello room")

        async with as_user(bob_cookie) as bob:
            history = (await next_of(bob, "history"))["messages"]
            assert [(m["user"], m["text"]) for m in history] == [("alice", "hello room")]
            await bob.send(json.dumps({"type": "typing", "typing": True}))
            assert await next_of(alice, "typing") == {
                "type": "typing",
                "user": "bob",
                "typing": True,
            }
            proc = await asyncio.create_subprocess_exec(
                *chat_site["manage"], "shell", "-c", ANNOUNCE,
                cwd=EXAMPLE, env=chat_site["env"],
            )  # fmt: skip
            assert await proc.wait() == 0
            for ws in (alice, bob):
                announcement = await next_of(ws, "announcement")
                assert (announcement["user"], announcement["text"]) == ("bob", "tea is ready")
