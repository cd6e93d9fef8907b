"""The Channels tutorial's chat before and after the move, and the mixed stage between.

``before`` (Channels consumers on Daphne) and ``after`` (chanlite handlers on
``manage.py chanlite``) are driven by the same tests: a client cannot tell them apart.
The mixed stage runs the Channels consumers and a chanlite handler in one group on one
shared layer, in one process and as Daphne beside chanlite.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from tests.channels_upgrade.conftest import MAKE_SESSION, Stage, make_stage, port

pytestmark = pytest.mark.timeout(90)

WAIT = 10.0


@dataclass
class Served:
    stage: Stage
    port: int
    session: str = ""


# The Channels project on Daphne, the same project on chanlite's server (stage 1 of the
# gradual path: nothing changed but the server), and the port.
SERVERS = {"before": "daphne", "before on chanlite run": "chanlite run", "after": "chanlite"}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The stage's project, migrated, with a logged-in user, on its own server."""
    name = request.param.split()[0]
    with make_stage(name, tmp_path_factory, then=MAKE_SESSION) as (stage, session):
        server = {
            "daphne": stage.daphne,
            "chanlite run": stage.chanlite_run,
            "chanlite": stage.chanlite,
        }[SERVERS[request.param]]()
        yield Served(stage, port(server), session)


@pytest.fixture(scope="module", params=["one process", "daphne beside chanlite"])
def mixed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stage, int, int]]:
    """The mixed stage; the ports serving the Channels consumers and the chanlite handler."""
    with make_stage("mixed", tmp_path_factory) as (stage, _):
        if request.param == "one process":
            new = old = port(stage.chanlite())
        else:
            servers = stage.chanlite(), stage.daphne("mysite.channels_asgi:application")
            new, old = (port(server) for server in servers)
        yield stage, old, new


async def ws(port: int, path: str, session: str = "", origin: str = "") -> ClientConnection:
    """A browser-like WebSocket: the page's Origin and, when logged in, its session cookie."""
    headers = {"Cookie": f"sessionid={session}"} if session else None
    return await connect(
        f"ws://127.0.0.1:{port}{path}",
        origin=Origin(origin or f"http://127.0.0.1:{port}"),
        additional_headers=headers,
        open_timeout=WAIT,
    )


async def receive(socket: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(socket.recv(), WAIT))


async def post(socket: ClientConnection, **content: Any) -> None:
    await socket.send(json.dumps(content))


def get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=WAIT) as response:
        return response.status, response.read().decode()


async def get_json(port: int, path: str) -> Any:
    status, body = await asyncio.to_thread(get, port, path)
    assert status == 200
    return json.loads(body)


async def test_a_room_talks_through_the_async_and_the_sync_path_and_keeps_its_lines(
    served: Served,
) -> None:
    port = served.port
    async with (
        await ws(port, "/ws/chat/lobby/") as alice,
        await ws(port, "/ws/sync-chat/lobby/") as bob,
        await ws(port, "/ws/chat/hall/") as carol,
    ):
        await post(alice, message="hello")
        assert [await receive(alice), await receive(bob)] == [{"message": "hello"}] * 2
        await post(bob, message="hello back")
        assert [await receive(alice), await receive(bob)] == [{"message": "hello back"}] * 2
        await post(carol, message="another room")
        assert await receive(carol) == {"message": "another room"}
        for n in range(5):  # in order, and nothing from the hall
            await post(alice, message=f"line {n}")
        expected = [{"message": f"line {n}"} for n in range(5)]
        assert [await receive(bob) for _ in range(5)] == expected
        assert [await receive(alice) for _ in range(5)] == expected
    # Both paths saved through the ORM; the HTTP consumer / handler reads them back.
    lobby = await get_json(port, "/chat/lobby/recent/")
    texts = ["hello", "hello back", *(f"line {n}" for n in range(5))]
    assert lobby == [{"room": "lobby", "message": text} for text in texts]
    assert await get_json(port, "/chat/hall/recent/") == [
        {"room": "hall", "message": "another room"}
    ]


async def test_only_a_logged_in_user_announces(served: Served) -> None:
    """``scope["user"]`` from AuthMiddlewareStack, ``ws.user`` from the Django contrib: the
    same session cookie, the same user."""
    port = served.port
    async with (
        await ws(port, "/ws/announcements/") as guest,
        await ws(port, "/ws/announcements/", session=served.session) as ann,
    ):
        await post(guest, text="free pizza")
        assert await receive(guest) == {"error": "log in to announce"}
        await post(ann, text="tea at four")
        assert await receive(guest) == {"announcement": "tea at four"}
        assert await receive(ann) == {"announcement": "tea at four"}


async def test_a_handshake_from_another_site_is_refused(served: Served) -> None:
    """AllowedHostsOriginValidator before, the contrib's origin check after: 403 both."""
    with pytest.raises(InvalidStatus) as refused:
        await ws(served.port, "/ws/chat/lobby/", origin="https://evil.example")
    assert refused.value.response.status_code == 403


async def test_the_room_page_is_served_by_django(served: Served) -> None:
    status, page = await asyncio.to_thread(get, served.port, "/chat/lobby/")
    assert status == 200
    assert "'/ws/chat/'" in page


async def static_status(port: int) -> int:
    try:
        status, body = await asyncio.to_thread(get, port, "/static/chat/room.css")
    except urllib.error.HTTPError as exc:
        return exc.code
    assert "#chat-log" in body
    return status


async def test_static_files_are_served_in_debug_as_runserver_does(served: Served) -> None:
    """``manage.py chanlite`` serves static files in DEBUG, as ``runserver`` does; Daphne
    (and ``chanlite run`` of the bare Channels router) never did."""
    expected = {"before": 404, "after": 200}[served.stage.name]
    assert await static_status(served.port) == expected


async def test_a_room_name_the_channels_route_would_not_match_is_refused(
    served: Served,
) -> None:
    """``re_path(r"(?P<room_name>\\w+)")`` kept a bad name out of the group (Channels
    answers "No route found" with a 500 and a traceback in the log); the ported handler
    checks the name before accepting: a 403."""
    expected = {"before": 500, "after": 403}[served.stage.name]
    for path in ("/ws/chat/not%20a%20room/", "/ws/no/such/path/"):
        with pytest.raises(InvalidStatus) as refused:
            await ws(served.port, path)
        assert refused.value.response.status_code == expected, path
    async with await ws(served.port, "/ws/chat/fine_room/") as ok:
        await post(ok, message="still served")
        assert await receive(ok) == {"message": "still served"}


async def test_a_consumer_and_a_handler_talk_in_one_group(mixed: tuple[Stage, int, int]) -> None:
    _, old, new = mixed
    async with (
        await ws(old, "/ws/chat/mixed/") as consumer,
        await ws(old, "/ws/sync-chat/mixed/") as sync_consumer,
        await ws(new, "/ws/v2/chat/mixed/") as handler,
    ):
        everyone = (consumer, sync_consumer, handler)
        await post(consumer, message="from a Channels consumer")
        for socket in everyone:
            assert await receive(socket) == {"message": "from a Channels consumer"}
        for n in range(5):
            await post(handler, message=f"from chanlite {n}")
        for socket in everyone:
            got = [await receive(socket) for _ in range(5)]
            assert got == [{"message": f"from chanlite {n}"} for n in range(5)]
    texts = ["from a Channels consumer", *(f"from chanlite {n}" for n in range(5))]
    assert await get_json(old, "/chat/mixed/recent/") == [
        {"room": "mixed", "message": text} for text in texts
    ]


async def test_sync_code_reaches_consumers_and_handlers(mixed: tuple[Stage, int, int]) -> None:
    """``manage.py say``, another process, posts through chanlite's sync sender."""
    stage, old, new = mixed
    async with (
        await ws(old, "/ws/chat/said/") as consumer,
        await ws(new, "/ws/v2/chat/said/") as handler,
    ):
        await asyncio.to_thread(stage.manage, "say", "said", "from the command line")
        assert await receive(consumer) == {"message": "from the command line"}
        assert await receive(handler) == {"message": "from the command line"}


async def test_a_broadcast_reaches_consumers_and_handlers(mixed: tuple[Stage, int, int]) -> None:
    """A broadcast is a ready frame for chanlite sockets; the consumers take it through
    chanlite.contrib.channels' mixins (without them Channels would close them, 1011)."""
    stage, old, new = mixed
    layer = f"sqlite:///{stage.data / 'chanlite.db'}"
    command = [sys.executable, "-m", "chanlite", "send", "--layer", layer]
    command += ["--broadcast-text", "the room closes at six", "chat_cast"]
    async with (
        await ws(old, "/ws/chat/cast/") as consumer,
        await ws(old, "/ws/sync-chat/cast/") as sync_consumer,
        await ws(new, "/ws/v2/chat/cast/") as handler,
    ):
        sent = await asyncio.to_thread(
            subprocess.run, command, env=stage.env, capture_output=True, text=True, timeout=60
        )
        assert sent.returncode == 0, sent.stderr
        assert "delivered to 3 members" in sent.stdout
        for socket in (consumer, sync_consumer, handler):
            assert await asyncio.wait_for(socket.recv(), WAIT) == "the room closes at six"
        # And they carry on as before.
        await post(consumer, message="noted")
        for socket in (consumer, sync_consumer, handler):
            assert await receive(socket) == {"message": "noted"}


async def test_static_files_pass_the_channels_router_in_debug(
    mixed: tuple[Stage, int, int],
) -> None:
    """The App's own fallback (the Channels router) gets static files in DEBUG, as
    Django's handler does."""
    assert await static_status(mixed[2]) == 200


async def test_the_page_offers_both_sockets(mixed: tuple[Stage, int, int]) -> None:
    _, _, new = mixed
    status, page = await asyncio.to_thread(get, new, "/chat/mixed/?v2")
    assert status == 200
    assert "'/ws/v2/chat/'" in page and "'/ws/chat/'" in page


@pytest.mark.parametrize("name", ["before", "after"])
def test_the_stage_s_own_tests_pass_under_django_s_runner(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """WebsocketCommunicator before, TestClient after: ``manage.py test chat`` on Django's
    test database."""
    stage = Stage(name, tmp_path_factory.mktemp(f"channels-upgrade-tests-{name}"))
    result = subprocess.run(
        [sys.executable, "manage.py", "test", "chat", "--verbosity", "2"],
        cwd=stage.folder, env=stage.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "test_a_line_reaches_the_room_and_is_saved" in result.stderr
    assert "Ran 1 test" in result.stderr and "\nOK" in result.stderr
