"""Real processes: ``manage.py chanlite`` holds the sockets, a plain WSGI Django process
sends to them over the SQLite layer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect

from tests.django.conftest import PROJECT, read_until, stop

pytestmark = pytest.mark.timeout(90)

WSGI_SERVER = """
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

from cl_testsite.wsgi import application

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = make_server("127.0.0.1", 0, application, handler_class=Quiet)
print("listening", server.server_port, flush=True)
server.serve_forever()
"""


CREATE_USER = (
    "from django.contrib.auth.models import User\nUser.objects.create_user('ann', password='pw')\n"
)
# Django's test client logs in and prints the session key its cookie carries.
PRINT_SESSION_KEY = (
    "from django.contrib.auth.models import User\n"
    "from django.test import Client\n"
    "c = Client(); c.force_login(User.objects.get(username='ann'))\n"
    "print(c.cookies['sessionid'].value)\n"
)


def site_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CHANLITE_"))}
    env["CL_TEST_DB"] = str(folder / "site.db")
    env["CL_TEST_LAYER"] = f"sqlite:///{folder / 'layer.db'}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("django-xproc")
    env = site_env(folder)
    manage = [sys.executable, str(PROJECT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], cwd=PROJECT, env=env, check=True, timeout=60)
    subprocess.run(
        [*manage, "shell", "-c", CREATE_USER], cwd=PROJECT, env=env, check=True, timeout=60
    )
    chanlite = subprocess.Popen(
        [*manage, "chanlite", "--port", "0", "--noreload", "--no-access-log"],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wsgi = subprocess.Popen(
        [sys.executable, "-c", WSGI_SERVER],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        ws_port = int(read_until(chanlite, r"http://127\.0\.0\.1:(\d+)", "manage.py chanlite")[1])
        wsgi_port = int(read_until(wsgi, r"listening (\d+)", "the WSGI server")[1])
        yield {"ws": ws_port, "wsgi": wsgi_port, "env": env}
    finally:
        stop(chanlite)
        stop(wsgi)


def post(url: str, fields: dict[str, str]) -> Any:
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(url, data=data, timeout=10) as response:
        return json.loads(response.read())


async def test_wsgi_view_sends_to_a_chanlite_process(servers: dict[str, Any]) -> None:
    async with connect(f"ws://127.0.0.1:{servers['ws']}/ws/watch", open_timeout=10) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"joined": True}
        url = f"http://127.0.0.1:{servers['wsgi']}/notify/"
        assert await asyncio.to_thread(post, url, {"text": "from wsgi"}) == {"sent": "from wsgi"}
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"notice": "from wsgi"}
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"broadcast": "from wsgi"}


async def test_served_site_knows_the_user_and_checks_origins(servers: dict[str, Any]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROJECT / "manage.py"), "shell", "-c", PRINT_SESSION_KEY,
        cwd=PROJECT, env=servers["env"], stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    cookie = out.decode().strip().splitlines()[-1]
    base = f"ws://127.0.0.1:{servers['ws']}"
    headers = {"Cookie": f"sessionid={cookie}"}
    async with connect(f"{base}/ws/whoami", additional_headers=headers, open_timeout=10) as ws:
        data = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert data["user"] == "ann" and data["authenticated"] is True
    with pytest.raises(websockets.InvalidStatus) as info:
        async with connect(f"{base}/ws/whoami", origin="http://evil.example", open_timeout=10):
            pass
    assert info.value.response.status_code == 403
    # Pages still come from Django, through the same server.
    page = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{servers['ws']}/page/", timeout=10)
    )
    assert page.read() == b"django page for anonymous"


async def test_served_site_refuses_cross_site_posts_to_chanlite_routes(
    servers: dict[str, Any],
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROJECT / "manage.py"), "shell", "-c", PRINT_SESSION_KEY,
        cwd=PROJECT, env=servers["env"], stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    cookie = out.decode().strip().splitlines()[-1]
    base = f"http://127.0.0.1:{servers['ws']}"

    def attempt(path: str) -> tuple[int, bytes]:
        # A form another site's page would submit: the victim's cookie rides along.
        request = urllib.request.Request(
            base + path,
            data=b"text=pwned",
            headers={"Cookie": f"sessionid={cookie}", "Origin": "https://evil.example"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    status, body = await asyncio.to_thread(attempt, "/api/note")
    assert status == 403 and b"CSRF verification failed" in body
    assert (await asyncio.to_thread(attempt, "/change/"))[0] == 403  # as a Django view
    assert (await asyncio.to_thread(attempt, "/api/hook"))[0] == 200  # @csrf_exempt


async def test_served_site_checks_the_scheme_and_port_of_an_origin(
    servers: dict[str, Any],
) -> None:
    """The origin check compares scheme and port too, on the real server: the site's own
    origin is accepted; the same host on another port or scheme is another site."""
    port = servers["ws"]
    url = f"ws://127.0.0.1:{port}/ws/whoami"
    async with connect(url, origin=f"http://127.0.0.1:{port}", open_timeout=10) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["authenticated"] is False
    for origin in (f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}"):
        with pytest.raises(websockets.InvalidStatus) as info:
            async with connect(url, origin=origin, open_timeout=10):
                pass
        assert info.value.response.status_code == 403, origin
