"""``chanlite run`` refuses a layer it cannot use before it says it is serving: a scheme
with a typo, a Redis port nobody listens on, a SQLite file another process holds locked,
wherever the URL comes from; and a target that is not an ASGI app, with what it found."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.procs import ROOT, chanlite

pytestmark = pytest.mark.timeout(60)

APP = "tests/server/checks_app.py:app"


def refused(*args: str, env: dict[str, str] | None = None) -> str:
    """Run ``chanlite run``; assert it exits before serving; return its stderr."""
    proc = chanlite(*args, "--port", "0", env=env)
    _, err = proc.communicate(timeout=45)
    assert proc.returncode != 0, err
    assert "chanlite serving" not in err, err  # never said it was ready
    assert "Traceback" not in err, err
    return err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, err
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_scheme_typo_in_the_app_argument_is_refused_with_the_installed_schemes() -> None:
    err = refused(APP, env={"CHECKS_APP_LAYER": "memroy://"})
    assert error_line(err) == (
        "Error: Application startup failed: Channel layer memroy:// cannot be used: No "
        "channel layer is installed for the scheme 'memroy'; did you mean memory://? "
        "Installed schemes: memory://, redis://, redis+cluster://, redis+sentinel://, "
        "rediss://, rediss+cluster://, rediss+sentinel://, sqlite://"
    )


def test_a_scheme_typo_on_the_command_line_says_did_you_mean_not_install() -> None:
    err = refused(APP, "--layer", "sqllite:///x.db")
    line = error_line(err)
    assert "did you mean sqlite://? Installed schemes: memory://, redis://" in line
    assert "pip install" not in line


@pytest.mark.parametrize("source", ["--layer", "CHANLITE_LAYER", "App(layer=...)"])
def test_redis_that_nobody_listens_on_stops_start_up(source: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    if source == "--layer":
        err = refused(APP, "--layer", url)
    elif source == "CHANLITE_LAYER":
        err = refused(APP, env={"CHANLITE_LAYER": url})
    else:
        err = refused(APP, env={"CHECKS_APP_LAYER": url})
    line = error_line(err)
    assert line.startswith(f"Error: Application startup failed: Channel layer {url} cannot be")
    assert "RedisUnavailable" not in line or "unreachable" in line
    assert "Connection refused" in line and "unreachable" in line


def test_a_sqlite_file_locked_by_another_process_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "c.execute('create table t(x)'); c.execute('begin exclusive')\n"
            "c.execute('insert into t values (1)'); print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        url = f"sqlite:///{path}?timeout=0.5"
        err = refused(APP, "--layer", url)
    finally:
        holder.communicate("", timeout=10)
    line = error_line(err)
    assert line.startswith(f"Error: Application startup failed: Channel layer {url} cannot be")
    assert f"Channel layer database {path} is locked by another process (waited 0.5 s)" in line
    # The lock is released: the same URL now starts.
    with sqlite3.connect(path) as conn:
        conn.execute("select 1")


def test_a_handler_named_as_the_target_is_refused_with_the_apps_of_its_module() -> None:
    err = refused("tests/server/checks_app.py:chat_message")
    assert error_line(err) == (
        "Error: tests/server/checks_app.py:chat_message is a function chat_message(ws, "
        "event), not an ASGI application "
        '(called as app(scope, receive, send)). Did you mean "tests/server/checks_app.py:app"? '
        "ASGI apps in tests/server/checks_app.py: app."
    )


def test_a_file_without_an_attribute_suggests_the_app_in_it() -> None:
    err = refused("tests/server/checks_app.py")
    line = error_line(err)
    assert line.endswith(
        'Did you mean "tests/server/checks_app.py:app"? ASGI apps in '
        "tests/server/checks_app.py: app."
    )


def test_a_missing_attribute_suggests_the_closest_app() -> None:
    err = refused("tests/server/checks_app.py:ap")
    assert 'Attribute "ap" not found in module "tests/server/checks_app.py". Did you mean' in err


def test_a_layer_from_django_settings_is_checked_too(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "chanlite", "--port", "0", "--noreload"],
        cwd=ROOT / "tests" / "django" / "project",
        env={
            **os.environ,
            "CL_TEST_LAYER": url,  # CHANLITE["LAYER"] in the test site's settings
            "CL_TEST_DB": str(tmp_path / "site.db"),
            "PYTHONUNBUFFERED": "1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=45)
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    line = error_line(err)
    assert line.startswith(f"Error: Application startup failed: Channel layer {url} cannot be")
    assert "Connection refused" in line


def test_a_sqlite_file_in_an_unwritable_place_stops_start_up() -> None:
    # /proc refuses new files even to root, where a chmod would not.
    url = "sqlite:////proc/chanlite-startup-check.db"
    err = refused(APP, "--layer", url)
    assert error_line(err) == (
        f"Error: Application startup failed: Channel layer {url} cannot be reached: Channel "
        "layer database /proc/chanlite-startup-check.db cannot be opened or created. Check "
        "that its folder exists and is writable."
    )
