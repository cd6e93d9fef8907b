"""Django for these tests: configured in-process once, with a real (file) test database.

Only this folder touches Django, and only through the ``site`` fixture: nothing is
configured at import or collection time, no environment variable is set, and the test
database is torn down at the end, so the rest of the suite in the same process never
sees Django. Subprocess tests get their settings through their own environment.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).parent / "project"


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
