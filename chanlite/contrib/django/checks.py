# mypy: disable-error-code="import-untyped"
"""System checks (``manage.py check``) for the ``CHANLITE`` setting."""

from __future__ import annotations

from typing import Any


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Report a malformed ``CHANLITE``, a missing ``APP`` and a process-local layer."""
    from django.core import checks
    from django.core.exceptions import ImproperlyConfigured

    from chanlite.contrib.django import conf

    try:
        settings = conf.get()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="chanlite.E001")]
    found: list[Any] = []
    if not settings.app:
        found.append(
            checks.Warning(
                "settings.CHANLITE['APP'] is not set, so there is no chanlite App to serve.",
                hint="CHANLITE = {'APP': 'mysite.realtime:app'}",
                id="chanlite.W001",
            )
        )
    if settings.layer.startswith("memory:"):
        found.append(
            checks.Warning(
                "The chanlite layer is memory://: events sent from other processes "
                "(WSGI workers, management commands) reach no socket.",
                hint="pip install chanlite-sqlite (from a chanlite checkout: pip install -e "
                "plugins/chanlite-sqlite), or set CHANLITE['LAYER'].",
                id="chanlite.W002",
            )
        )
    return found
