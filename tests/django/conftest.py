"""Django for these tests: configured in-process once, with a real (file) test database.

Only this folder touches Django, and only through the ``site`` fixture: nothing is
configured at import or collection time, no environment variable is set, and the test
database is torn down at the end, so the rest of the suite in the same process never
sees Django. Subprocess tests get their settings through their own environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).parent / "project"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_chat"


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Configure Django from the test site's settings and set up its test database."""
    folder = tmp_path_factory.mktemp("django-site")
    sys.path.insert(0, str(PROJECT))
    import django
    from django.conf import settings

    if not settings.configured:
        from cl_testsite import settings as site_settings

        values = {name: getattr(site_settings, name) for name in dir(site_settings)}
        values = {name: value for name, value in values.items() if name.isupper()}
        values["DATABASES"] = {
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(folder / "site.db"),
                "TEST": {"NAME": str(folder / "test-site.db")},
            }
        }
        settings.configure(**values)
    django.setup()
    from django.test.runner import DiscoverRunner
    from django.test.utils import setup_test_environment, teardown_test_environment

    setup_test_environment()
    runner = DiscoverRunner(verbosity=0, interactive=False)
    old_config = runner.setup_databases()
    try:
        yield settings
    finally:
        from django.db import connections

        from chanlite.contrib.django.db import shutdown

        shutdown(wait=True)

        connections.close_all()
        runner.teardown_databases(old_config)
        teardown_test_environment()
        sys.path.remove(str(PROJECT))


@pytest.fixture
async def client(site: Any) -> AsyncIterator[Any]:
    """A TestClient on the site's App (served as get_asgi_application() serves it)."""
    from chanlite.contrib.django import get_asgi_application
    from chanlite.testing import TestClient

    app = get_asgi_application()
    async with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def chat_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("django-chat")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CHANLITE_"))}
    env.update(DJANGO_CHAT_DATA=str(folder), PYTHONUNBUFFERED="1")
    manage = [sys.executable, str(EXAMPLE / "manage.py")]
    # chatdemo migrates and adds alice and bob, then serves: the README's one command.
    server = subprocess.Popen(
        [*manage, "chatdemo", "--port", "0", "--noreload", "--no-access-log"],
        cwd=EXAMPLE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        port = int(read_until(server, r"http://127\.0\.0\.1:(\d+)", "manage.py chatdemo")[1])
        yield {"port": port, "env": env, "manage": manage}
    finally:
        stop(server)


def read_until(proc: subprocess.Popen[str], pattern: str, what: str) -> re.Match[str]:
    """Read *proc*'s output lines until one matches *pattern* (the test timeout bounds it)."""
    seen: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            # Keep reading in the background, so a full pipe never stalls the process.
            threading.Thread(target=seen.extend, args=(proc.stdout,), daemon=True).start()
            return match
    raise AssertionError(f"{what} exited ({proc.wait()}) before ready:\n{''.join(seen)}")


def stop(proc: subprocess.Popen[str]) -> None:
    """Terminate *proc* (the server drains), killing it if it does not stop."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
