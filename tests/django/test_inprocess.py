"""chanlite.contrib.django in-process: sessions, users, origins, the ORM bridge, senders."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

import pytest

from chanlite.testing import TestClient
from chanlite.testing.client import WebSocketRejected

pytestmark = pytest.mark.timeout(30)


async def run_sync(func: Any, *args: Any) -> Any:
    """Run Django's sync API off the loop (it refuses to run on it)."""
    return await asyncio.to_thread(func, *args)


def make_user(password: str = "pw") -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user(f"u{uuid.uuid4().hex[:10]}", password=password)


def session_cookie_for(user: Any) -> str:
    """Log *user* in through Django's own test client; the session cookie value."""
    from django.test import Client

    browser = Client()
    browser.force_login(user)
    return str(browser.cookies["sessionid"].value)


def stored_session(key: str) -> dict[str, Any] | None:
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore(key)
    return dict(store.load()) if store.exists(key) else None


async def test_importing_chanlite_does_not_import_django() -> None:
    code = (
        "import sys, chanlite, chanlite.contrib.django, chanlite.app\n"
        "assert 'django' not in sys.modules, sorted(m for m in sys.modules if 'django' in m)\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    assert await proc.wait() == 0


async def test_anonymous_socket(client: TestClient) -> None:
    async with client.websocket("/ws/whoami") as ws:
        data = await ws.receive_json()
    assert data == {"user": "", "authenticated": False, "session_key": None}


async def test_authenticated_socket(client: TestClient) -> None:
    user = await run_sync(make_user)
    cookie = await run_sync(session_cookie_for, user)
    async with client.websocket("/ws/whoami", cookies={"sessionid": cookie}) as ws:
        data = await ws.receive_json()
    assert data == {"user": user.username, "authenticated": True, "session_key": cookie}


@pytest.mark.parametrize(
    "cookie",
    [
        "sessionid=not-a-real-session-key-0123456789",
        'sessionid="\\x00\\xff;;;==="',
        "sessionid=" + "A" * 5000,
        "sessionid=%%%; =; sessionid",
        ";;;==,,",
    ],
)
async def test_malformed_session_cookie_is_anonymous(client: TestClient, cookie: str) -> None:
    async with client.websocket("/ws/whoami", headers={"cookie": cookie}) as ws:
        data = await ws.receive_json()
    assert data["authenticated"] is False


async def test_http_route_knows_the_user(client: TestClient) -> None:
    user = await run_sync(make_user)
    cookie = await run_sync(session_cookie_for, user)
    response = await client.get("/api/me", cookies={"sessionid": cookie})
    assert response.json() == {"user": user.username, "authenticated": True}


async def test_other_requests_go_to_django(client: TestClient) -> None:
    response = await client.get("/page/")
    assert response.status_code == 200
    assert response.text == "django page for anonymous"
    assert (await client.get("/nope/")).status_code == 404


async def test_unrouted_websocket_is_refused(client: TestClient) -> None:
    with pytest.raises(WebSocketRejected) as info:
        async with client.websocket("/page/"):
            pass
    assert info.value.status_code == 403


# -- origin check ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    ["http://testserver", "http://localhost", "http://127.0.0.1", "http://127.0.0.1:80"],
)
async def test_origin_allowed_by_allowed_hosts(client: TestClient, origin: str) -> None:
    # Hosts of ALLOWED_HOSTS, served like the request: ws:// (so http) on port 80.
    async with client.websocket("/ws/whoami", headers={"origin": origin}) as ws:
        assert (await ws.receive_json())["authenticated"] is False


@pytest.mark.parametrize(
    "origin",
    [
        "https://testserver",
        "http://testserver:8080",
        "https://localhost:8443",
        "http://127.0.0.1:8000",
        "http://localhost:80x",
    ],
)
async def test_another_port_or_scheme_on_an_allowed_host_is_rejected(
    client: TestClient, origin: str
) -> None:
    # Another port or scheme is another origin: another server, maybe not the project's.
    with pytest.raises(WebSocketRejected) as info:
        async with client.websocket("/ws/whoami", headers={"origin": origin}):
            pass
    assert info.value.status_code == 403


async def test_secure_requests_want_https_origins(site: Any) -> None:
    from django.test import override_settings

    from chanlite.contrib.django import get_asgi_application

    app = get_asgi_application()
    async with TestClient(app, base_url="https://testserver") as secure:
        async with secure.websocket("/ws/whoami", headers={"origin": "https://testserver"}):
            pass
        with pytest.raises(WebSocketRejected):
            async with secure.websocket("/ws/whoami", headers={"origin": "http://testserver"}):
                pass
    proxied = {"origin": "https://testserver", "x-forwarded-proto": "https"}
    async with TestClient(app) as plain:
        with pytest.raises(WebSocketRejected):
            async with plain.websocket("/ws/whoami", headers=proxied):
                pass
        # Behind a TLS proxy Django trusts (SECURE_PROXY_SSL_HEADER), as request.is_secure().
        with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
            async with plain.websocket("/ws/whoami", headers=proxied):
                pass


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "null",
        "http://testserver.evil.example",
        "garbage",
        "http://[oops",
        "http://testserver@evil.example",
        "ftp://testserver",
        "http://user@evil.example",
    ],
)
async def test_cross_site_origin_is_rejected_with_403(client: TestClient, origin: str) -> None:
    with pytest.raises(WebSocketRejected) as info:
        async with client.websocket("/ws/whoami", headers={"origin": origin}):
            pass
    assert info.value.status_code == 403


async def test_csrf_trusted_origins_and_allowed_origins(client: TestClient) -> None:
    from django.test import override_settings

    with override_settings(CSRF_TRUSTED_ORIGINS=["https://*.example.com"]):
        async with client.websocket("/ws/whoami", headers={"origin": "https://a.example.com"}):
            pass
        with pytest.raises(WebSocketRejected):
            async with client.websocket("/ws/whoami", headers={"origin": "http://a.example.com"}):
                pass
    with override_settings(
        CHANLITE={"APP": "cl_testsite.realtime:app", "ALLOWED_ORIGINS": ["http://evil.example"]}
    ):
        async with client.websocket("/ws/whoami", headers={"origin": "http://evil.example"}):
            pass


async def test_same_origin_with_wildcard_allowed_hosts(client: TestClient) -> None:
    from django.test import override_settings

    with override_settings(ALLOWED_HOSTS=["*"]):
        # "*" accepts any Host, but an origin still has to be the site itself.
        headers = {"origin": "http://chat.example:8000", "host": "chat.example:8000"}
        async with client.websocket("/ws/whoami", headers=headers):
            pass
        with pytest.raises(WebSocketRejected):
            async with client.websocket("/ws/whoami", headers={"origin": "http://evil.example"}):
                pass


async def test_origin_check_can_be_turned_off(client: TestClient) -> None:
    from django.test import override_settings

    with override_settings(CHANLITE={"APP": "cl_testsite.realtime:app", "CHECK_ORIGIN": False}):
        async with client.websocket("/ws/whoami", headers={"origin": "http://evil.example"}):
            pass


# -- login / logout ------------------------------------------------------------------------


async def test_login_after_accept_saves_the_session(client: TestClient) -> None:
    user = await run_sync(make_user)
    async with client.websocket("/ws/login") as ws:
        await ws.send_json({"username": user.username, "password": "pw"})
        data = await ws.receive_json()
        assert data["authenticated"] is True and data["user"] == user.username
        saved = await run_sync(stored_session, data["session_key"])
        assert saved is not None and saved["_auth_user_id"] == str(user.pk)
        await ws.send_text("logout")
        assert await ws.receive_json() == {"user": "", "authenticated": False}
    assert await run_sync(stored_session, data["session_key"]) is None


async def test_login_before_accept_sets_the_cookie(client: TestClient) -> None:
    user = await run_sync(make_user)
    async with client.websocket("/ws/login", params={"early": user.username}) as ws:
        data = await ws.receive_json()
        cookies = ws.accept_headers.get_list("set-cookie")
        await ws.send_text("stay")
    assert data["authenticated"] is True
    assert len(cookies) == 1 and cookies[0].startswith(f"sessionid={data['session_key']};")
    assert "HttpOnly" in cookies[0]
    # The browser is now logged in for Django's pages too.
    page = await client.get("/page/", cookies={"sessionid": data["session_key"]})
    assert page.text == f"django page for {user.username}"


async def test_login_rotates_an_existing_session_key(client: TestClient) -> None:
    user = await run_sync(make_user)
    other = await run_sync(make_user)
    cookie = await run_sync(session_cookie_for, other)
    async with client.websocket("/ws/login", cookies={"sessionid": cookie}) as ws:
        await ws.send_json({"username": user.username, "password": "pw"})
        data = await ws.receive_json()
        await ws.send_text("stay")
    assert data["user"] == user.username and data["session_key"] != cookie


# -- the ORM bridge --------------------------------------------------------------------


async def test_slow_orm_call_does_not_delay_other_sockets(client: TestClient) -> None:
    from cl_testsite.realtime import release_slow

    release_slow.clear()
    try:
        async with client.websocket("/ws/slow") as slow, client.websocket("/ws/echo") as echo:
            assert await slow.receive_json() == {"started": True}
            # The bridge's only thread is now parked in slow_count(); the loop is not.
            for i in range(20):
                await echo.send_text(f"ping {i}")
                assert await echo.receive_text() == f"ping {i}"
            release_slow.set()
            assert isinstance((await slow.receive_json())["count"], int)
    finally:
        release_slow.set()


async def test_orm_exception_reaches_the_handler_with_its_traceback(client: TestClient) -> None:
    async with client.websocket("/ws/error") as ws:
        data = await ws.receive_json()
    assert data["error"] == "DoesNotExist"
    assert "missing_user" in data["frames"]  # the frame from the pool thread is kept


async def test_db_forms(site: Any) -> None:
    from django.contrib.auth.models import User

    from chanlite.contrib.django import db

    @db
    def count_named(prefix: str) -> int:
        return int(User.objects.filter(username__startswith=prefix).count())

    assert await count_named("no-such-prefix") == 0
    assert await db(count_named.func, "no-such") == 0
    assert isinstance(await db(User.objects.count), int)
    assert await db(lambda a, b=0: a + b, 1, b=2) == 3
    with pytest.raises(TypeError):
        db(42)  # type: ignore[call-overload]


async def test_concurrent_writes_do_not_lock(client: TestClient) -> None:
    """Sockets writing at once, plus other threads with their own connections (as Django's
    views under ASGI have): every read-then-write transaction commits."""
    import threading

    from django.contrib.auth.models import Group
    from django.db import close_old_connections, transaction

    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for i in range(15):
                with transaction.atomic():
                    Group.objects.filter(name__startswith=tag).count()
                    Group.objects.create(name=f"{tag}-{i}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            close_old_connections()

    tag = uuid.uuid4().hex[:8]
    threads = [threading.Thread(target=writer, args=(f"{tag}t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()

    async def socket_writes(n: int) -> None:
        async with client.websocket("/ws/write") as ws:
            for i in range(15):
                await ws.send_text(f"{tag}s{n}-{i}")
                assert await ws.receive_text() == "ok"

    await asyncio.gather(*(socket_writes(n) for n in range(4)))
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    assert errors == []
    total = await run_sync(lambda: Group.objects.filter(name__startswith=tag).count())
    assert total == 8 * 15 + 4 * 15


async def test_pool_size_setting_and_reset(site: Any) -> None:
    from django.test import override_settings

    from chanlite.contrib.django import conf, db
    from chanlite.contrib.django.db import executor

    assert conf.get().db_threads == 1  # SQLite: one connection per process by default
    with override_settings(CHANLITE={"APP": "x:app", "DB_THREADS": 3}):
        assert conf.get().db_threads == 3
        assert executor()._max_workers == 3
        names = await asyncio.gather(*(db(_thread_name) for _ in range(6)))
        assert all(name.startswith("chanlite-db") for name in names)
    assert conf.get().db_threads == 1


def _thread_name() -> str:
    import threading

    return threading.current_thread().name


# -- settings errors ------------------------------------------------------------------


async def test_missing_app_setting_is_a_one_line_error(site: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from chanlite.contrib.django.asgi import load_app

    with override_settings(CHANLITE={}), pytest.raises(ImproperlyConfigured) as info:
        load_app()
    message = str(info.value)
    assert "CHANLITE['APP']" in message and "\n" not in message


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ({"APP": "nocolon"}, "CHANLITE['APP']"),
        ({"LAYER": "nope"}, "CHANLITE['LAYER']"),
        ({"DB_THREADS": 0}, "CHANLITE['DB_THREADS']"),
        ({"TYPO": 1}, "TYPO"),
    ],
)
async def test_bad_settings_name_the_key(site: Any, value: dict[str, Any], needle: str) -> None:
    from django.core import checks
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from chanlite.contrib.django import conf

    with override_settings(CHANLITE=value):
        with pytest.raises(ImproperlyConfigured, match=needle.replace("[", r"\[")):
            conf.get()
        errors = checks.run_checks(tags=["chanlite"])
        assert [e.id for e in errors] == ["chanlite.E001"]


async def test_app_import_errors_name_the_setting(site: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from chanlite.contrib.django.asgi import load_app

    for target in ("no_such_module_xyz:app", "cl_testsite.settings:DEBUG"):
        with override_settings(CHANLITE={"APP": target}), pytest.raises(ImproperlyConfigured):
            load_app()


# -- sync senders -----------------------------------------------------------------------


async def test_sync_senders_from_a_thread_reach_sockets(client: TestClient) -> None:
    from chanlite.contrib.django import broadcast, group_send

    async with client.websocket("/ws/watch") as ws:
        assert await ws.receive_json() == {"joined": True}
        await asyncio.to_thread(group_send, "watchers", {"type": "notice", "text": "hi"})
        assert await ws.receive_json() == {"notice": "hi"}
        await asyncio.to_thread(broadcast, "watchers", json={"b": 1})
        assert await ws.receive_json() == {"b": 1}


async def test_django_view_pushes_to_sockets(client: TestClient) -> None:
    async with client.websocket("/ws/watch") as ws:
        assert await ws.receive_json() == {"joined": True}
        response = await client.post("/notify/", data={"text": "from a view"})
        assert response.json() == {"sent": "from a view"}
        assert await ws.receive_json() == {"notice": "from a view"}
        assert await ws.receive_json() == {"broadcast": "from a view"}


async def test_sync_senders_refuse_the_event_loop_thread(client: TestClient) -> None:
    from chanlite.contrib.django import group_send

    async with client.websocket("/ws/watch") as ws:
        assert await ws.receive_json() == {"joined": True}
        with pytest.raises(RuntimeError, match="await the async API"):
            group_send("watchers", {"type": "notice", "text": "x"})


async def test_sqlite_connections_are_tuned(site: Any) -> None:
    def pragmas() -> tuple[str, int, Any]:
        from django.db import connection

        with connection.cursor() as cursor:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            timeout = cursor.execute("PRAGMA busy_timeout").fetchone()[0]
        return mode, timeout, getattr(connection, "transaction_mode", "IMMEDIATE")

    assert await db_call(pragmas) == ("wal", 20000, "IMMEDIATE")


async def db_call(func: Any) -> Any:
    from chanlite.contrib.django import db

    return await db(func)


# -- manage.py chanlite -------------------------------------------------------------------


async def test_command_line_becomes_chanlite_run_arguments(site: Any) -> None:
    from django.test import override_settings

    from chanlite.contrib.django.management.commands import chanlite as command

    args = ["--settings", "x.settings", "--pythonpath=.", "--port", "0", "--noreload"]
    assert command.server_arguments(args) == [
        "chanlite.contrib.django.asgi:application",
        "--port",
        "0",
        "--no-reload",
    ]
    with override_settings(ASGI_APPLICATION="mysite.asgi.application"):
        assert command.target() == "mysite.asgi:application"
    with override_settings(
        DEBUG=True, CHANLITE={"APP": "cl_testsite.realtime:app", "SERVER": {"port": 8123}}
    ):
        defaults = command.server_defaults()
    assert defaults["reload"] is True and defaults["port"] == 8123
    assert defaults["reload_dirs"] == [str(site.BASE_DIR)]


async def test_command_help_lists_the_server_options(site: Any) -> None:
    from tests.django.conftest import PROJECT

    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROJECT / "manage.py"), "chanlite", "--help",
        cwd=PROJECT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    for option in ("--port", "--layer", "--reload", "--workers", "--ws-max-size"):
        assert option in out.decode()
    # Its own usage: the site is the target, so no TARGET argument is shown.
    words = " ".join(out.decode().split())
    assert "manage.py chanlite [OPTIONS] Serve the Django site" in words
    assert "TARGET" not in words
    assert 'CHANLITE["APP"]' in out.decode()


async def test_session_store_failure_is_anonymous_and_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    from django.test import override_settings

    with override_settings(SESSION_ENGINE="cl_testsite.broken_sessions"):
        async with client.websocket("/ws/whoami", cookies={"sessionid": "k" * 32}) as ws:
            data = await ws.receive_json()
    assert data["authenticated"] is False
    assert "Could not load the session" in caplog.text
    assert "k" * 32 not in caplog.text  # the key is a credential


async def test_signed_cookie_sessions(client: TestClient) -> None:
    from django.test import override_settings

    user = await run_sync(make_user)
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies"):
        cookie = await run_sync(session_cookie_for, user)
        async with client.websocket("/ws/whoami", cookies={"sessionid": cookie}) as ws:
            data = await ws.receive_json()
        tampered = cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB")
        async with client.websocket("/ws/whoami", cookies={"sessionid": tampered}) as ws:
            assert (await ws.receive_json())["authenticated"] is False
    assert data["user"] == user.username and data["authenticated"] is True
