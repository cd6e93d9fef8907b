# mypy: disable-error-code="import-untyped"
"""The Django app: ``INSTALLED_APPS += ["chanlite.contrib.django"]``."""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.apps import AppConfig

logger = logging.getLogger("chanlite.contrib.django")


class ChanliteConfig(AppConfig):  # type: ignore[misc]
    """Connects the settings reset, the SQLite tuning and the system checks."""

    name = "chanlite.contrib.django"
    label = "chanlite"
    verbose_name = "chanlite"

    def ready(self) -> None:
        from django.core import checks
        from django.core.signals import setting_changed
        from django.db.backends.signals import connection_created

        from chanlite.contrib.django import conf
        from chanlite.contrib.django.checks import check_settings

        setting_changed.connect(conf.setting_changed, dispatch_uid="chanlite-settings")
        connection_created.connect(tune_sqlite, dispatch_uid="chanlite-sqlite")
        checks.register(check_settings, "chanlite")


def tune_sqlite(sender: Any, connection: Any, **kwargs: Any) -> None:
    """WAL, a busy timeout and BEGIN IMMEDIATE on new SQLite connections.

    With these, writers in several threads or processes queue for the write lock instead
    of failing with "database is locked": WAL lets readers run beside the writer, the busy
    timeout makes a writer wait, and IMMEDIATE takes the write lock when a transaction
    begins, so a read-then-write transaction cannot fail to upgrade its lock (SQLite does
    not wait in that case). Options set in ``DATABASES[...]["OPTIONS"]`` are kept.
    """
    if connection.vendor != "sqlite":
        return
    from django.core.exceptions import ImproperlyConfigured

    from chanlite.contrib.django import conf

    try:
        settings = conf.get()
    except ImproperlyConfigured:
        return  # reported by the system checks; never break database access over it
    if not settings.sqlite_tuning:
        return
    import sqlite3

    options = connection.settings_dict.get("OPTIONS") or {}
    raw = connection.connection
    try:
        if "timeout" not in options:
            raw.execute(f"PRAGMA busy_timeout = {int(settings.sqlite_busy_timeout * 1000)}")
        if not connection.is_in_memory_db():
            raw.execute("PRAGMA journal_mode = WAL")
    except sqlite3.Error as exc:
        logger.warning("Could not tune SQLite database %s: %s", connection.alias, exc)
    if "transaction_mode" in options:
        return
    if hasattr(connection, "transaction_mode"):
        if connection.transaction_mode is None:
            # Django >= 5.1 reads this attribute when it begins a transaction.
            connection.transaction_mode = "IMMEDIATE"
    else:
        # Older Django always sends a plain BEGIN; have this connection begin IMMEDIATE.
        connection._start_transaction_under_autocommit = functools.partial(
            _begin_immediate, connection
        )


def _begin_immediate(connection: Any) -> None:
    connection.cursor().execute("BEGIN IMMEDIATE")
