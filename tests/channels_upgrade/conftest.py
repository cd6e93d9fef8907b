"""The three stages of examples/channels_upgrade, each a Django project on real servers.

Every stage gets its own data folder (``$CHAT_DATA``): a migrated SQLite database (the
project's real schema, made by ``manage.py migrate``) and, for chanlite, the layer file.
Servers are OS processes started the way the example's README says: Daphne for the
Channels project, ``manage.py chanlite`` for chanlite, both for the mixed stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.django.conftest import read_until, stop

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "channels_upgrade"

DAPHNE_READY = r"Listening on TCP address 127\.0\.0\.1:(\d+)"
CHANLITE_READY = r"http://127\.0\.0\.1:(\d+)"

# A user and a logged-in session, made with Django's own API: the session cookie a browser
# would carry after logging in.
MAKE_SESSION = """
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore

user = User.objects.create_user("ann", password="not-a-real-password")
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
print(session.session_key)
"""


@dataclass
class Stage:
    """One stage's project folder, its environment and its running servers."""

    name: str
    data: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return EXAMPLE / self.name

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "CHANLITE_", "CHAT_", "PYTHONPATH"))
        }
        env.update(CHAT_DATA=str(self.data), PYTHONUNBUFFERED="1")
        return env

    def manage(self, *args: str) -> str:
        """Run ``manage.py ARGS`` to its end; its output."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    def spawn(self, command: list[str]) -> subprocess.Popen[str]:
        """Start a server process in the project folder (stopped with the stage)."""
        proc = subprocess.Popen(
            command, cwd=self.folder, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def daphne(self, target: str = "mysite.asgi:application") -> subprocess.Popen[str]:
        """Daphne serving *target*: read its port with :func:`port`."""
        return self.spawn([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "0", target])

    def chanlite_run(self, target: str = "mysite.asgi:application") -> subprocess.Popen[str]:
        """``chanlite run TARGET``, in place of Daphne: read its port with :func:`port`."""
        command = [sys.executable, "-m", "chanlite", "run", target, "--port", "0"]
        return self.spawn([*command, "--no-access-log"])

    def chanlite(self) -> subprocess.Popen[str]:
        """``manage.py chanlite`` (the project's ASGI_APPLICATION): read its port with
        :func:`port`."""
        command = [sys.executable, "manage.py", "chanlite", "--port", "0", "--noreload"]
        command.append("--no-access-log")
        return self.spawn(command)

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc)


def port(proc: subprocess.Popen[str]) -> int:
    """The port a server started by :class:`Stage` listens on, once it does."""
    daphne = "daphne" in proc.args
    ready = DAPHNE_READY if daphne else CHANLITE_READY
    return int(read_until(proc, ready, "daphne" if daphne else "manage.py chanlite")[1])


MIGRATE = "from django.core.management import call_command; call_command('migrate', verbosity=0)"


@contextmanager
def make_stage(
    name: str, tmp_path_factory: pytest.TempPathFactory, *, then: str = ""
) -> Iterator[tuple[Stage, str]]:
    """The stage with its database migrated; what the *then* script (run in the same
    ``manage.py shell``, after migrating) printed last."""
    stage = Stage(name, tmp_path_factory.mktemp(f"channels-upgrade-{name}"))
    printed = stage.manage("shell", "--command", f"{MIGRATE}\n{then}").split()
    try:
        yield stage, printed[-1] if printed else ""
    finally:
        stage.stop()
